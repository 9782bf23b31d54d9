#pragma once
/// stb_image (Debian's libstb-dev), compiled into the including translation unit with static
/// linkage (like stb_image_write in <ddpm/io/png.hpp>), once, for every ddpm header that
/// decodes images: <ddpm/data/folder.hpp> (PNG, JPEG, BMP) and <ddpm/eval/sample_io.hpp>
/// (PNG). DDPM_HAS_STB_IMAGE is 1 when <stb/stb_image.h> exists and 0 otherwise (the
/// includers then say what to install).
#if __has_include(<stb/stb_image.h>)
#if defined(STBI_INCLUDE_STB_IMAGE_H)
#error "ddpm's headers that decode images (<ddpm/data/folder.hpp>, included by <ddpm/data/registry.hpp> and <ddpm/train/trainer.hpp>, and <ddpm/eval/sample_io.hpp>) must be included before any other inclusion of stb_image.h"
#endif
#define DDPM_STB_IMAGE_INCLUDED 1
#define DDPM_HAS_STB_IMAGE 1
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wshadow"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#endif
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#include <stb/stb_image.h>
#undef STB_IMAGE_IMPLEMENTATION
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
#else
#define DDPM_HAS_STB_IMAGE 0
#endif

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace ddpm {
namespace detail {

/// Checks the Huffman tables (DHT segments, ITU T.81 B.2.4.2) of the JPEG in `p[0, n)` before
/// stb_image decodes it: Debian's stb_image 2.27 builds a table's size list without checking that
/// its 16 code counts sum to at most 256, and writes past the table (memory corruption) when they
/// do not (found by tests/fuzz/fuzz_image; fixed upstream in 2.28). Walks the marker segments the
/// way a decoder meets them (entropy-coded data skipped to its next marker; bytes past the end read
/// as 0, as stb_image reads them). Returns the reason when a table declares more than 256 codes,
/// "" otherwise (also for anything not a JPEG).
inline std::string jpeg_huffman_tables_error(const uint8_t* p, size_t n) {
  // stb_image takes any run of 0xFF fill bytes before the SOI marker (0xD8), as before any marker.
  size_t i = 0;
  while (i < n && p[i] == 0xFF) ++i;
  if (i == 0 || i >= n || p[i] != 0xD8) return "";
  ++i;
  while (i < n) {
    if (p[i] != 0xFF) {  // entropy-coded data (or junk) up to the next marker
      ++i;
      continue;
    }
    while (i < n && p[i] == 0xFF) ++i;  // fill bytes
    if (i >= n) break;
    const uint8_t m = p[i++];
    if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD8)) continue;  // stuffed 0xFF, TEM, RSTn, SOI: no length
    if (m == 0xD9) break;                                                // EOI
    if (i + 2 > n) break;
    const size_t len = (static_cast<size_t>(p[i]) << 8) | p[i + 1];
    const size_t end = i + len;
    if (m == 0xC4) {
      // stb_image reads 0 past the end of the data, and so do we.
      for (size_t q = i + 2; q < end && q < n;) {
        size_t codes = 0;
        for (size_t k = q + 1; k <= q + 16 && k < n; ++k) codes += p[k];
        if (codes > 256) {
          return "its JPEG Huffman table at byte offset " + std::to_string(q) + " declares " + std::to_string(codes) +
                 " codes (at most 256)";
        }
        q += 17 + codes;
      }
    }
    if (len < 2) break;  // stb_image reports the bad length
    i = end;
  }
  return "";
}

/// Whether `p[0, n)` starts with the PNG signature.
inline bool is_png(const uint8_t* p, size_t n) {
  static const uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  return n >= 8 && std::memcmp(p, kSignature, 8) == 0;
}

/// The data length of the PNG chunk at `p + i` (big-endian 32 bits; needs 4 bytes there).
inline size_t png_chunk_length(const uint8_t* p, size_t i) {
  return (size_t{p[i]} << 24) | (size_t{p[i + 1]} << 16) | (size_t{p[i + 2]} << 8) | size_t{p[i + 3]};
}

/// Checks the chunk lengths of the PNG in `p[0, n)` before stb_image decodes it: stb_image
/// allocates the length an IDAT chunk announces before reading it, so a few bytes announcing a
/// 2 GiB chunk allocate 2 GiB (found by tests/fuzz/fuzz_image). Every chunk (length, type, data,
/// CRC) must lie inside the data. Returns the reason when one does not, "" otherwise (also for
/// anything not a PNG).
inline std::string png_chunks_error(const uint8_t* p, size_t n) {
  if (!is_png(p, n)) return "";
  for (size_t i = 8; i + 8 <= n;) {
    const uint64_t len = png_chunk_length(p, i);
    if (len > n - i - 8 || n - i - 8 - len < 4) {
      return "its PNG chunk at byte offset " + std::to_string(i) + " announces " + std::to_string(len) +
             " bytes, past the end of the file (" + std::to_string(n) + " bytes)";
    }
    if (std::memcmp(p + i + 4, "IEND", 4) == 0) break;
    i += 12 + static_cast<size_t>(len);
  }
  return "";
}

/// Checks that `p[0, n)` holds enough data for the w x h pixels its header announces, before
/// stb_image decodes it: stb_image reads bytes past the end of a JPEG or BMP as 0, so a 600-byte
/// JPEG announcing 8192 x 8192 pixels decodes, at full cost (seconds, 200 MB), into a gray image
/// (found as a 10 s unit by tests/fuzz/fuzz_image). Lower bounds that hold for any valid file:
/// a JPEG codes every MCU (at most 32 x 32 pixels, sampling factors <= 4) of its first scan with at
/// least one bit (ITU T.81 F.1.2: a Huffman code is >= 1 bit); an uncompressed BMP (stb_image reads
/// no other) stores w x h pixels of its header's bits per pixel. PNG needs no check here: stb_image
/// refuses a PNG whose inflated data is short. Returns the reason, "" otherwise.
inline std::string image_data_size_error(const uint8_t* p, size_t n, int w, int h) {
  auto too_short = [&](const char* format, uint64_t need) {
    return std::string("it is too short for the ") + std::to_string(w) + " x " + std::to_string(h) +
           " pixels its " + format + " header announces (" + std::to_string(n) + " bytes; at least " +
           std::to_string(need) + " needed; truncated?)";
  };
  const uint64_t pixels = static_cast<uint64_t>(w) * static_cast<uint64_t>(h);
  size_t i = 0;
  while (i < n && p[i] == 0xFF) ++i;
  if (i > 0 && i < n && p[i] == 0xD8) {
    const uint64_t mcus = ((static_cast<uint64_t>(w) + 31) / 32) * ((static_cast<uint64_t>(h) + 31) / 32);
    if (static_cast<uint64_t>(n) < mcus / 8) return too_short("JPEG", mcus / 8);
    return "";
  }
  if (n >= 30 && p[0] == 'B' && p[1] == 'M') {
    // Bits per pixel: at offset 24 after a 12-byte OS/2 core header, 28 after any longer one.
    const size_t at = (p[14] == 12 && p[15] == 0 && p[16] == 0 && p[17] == 0) ? 24 : 28;
    const uint64_t bits_per_pixel = static_cast<uint64_t>(p[at]) | (static_cast<uint64_t>(p[at + 1]) << 8);
    const uint64_t need = pixels * std::max<uint64_t>(bits_per_pixel, 1) / 8;
    if (static_cast<uint64_t>(n) < need) return too_short("BMP", need);
  }
  return "";
}

/// The most pixels an image may have (8192 x 8192): checked from its header before it is
/// decoded, so a small file announcing a huge image allocates nothing.
constexpr int64_t kMaxImagePixels = int64_t{1} << 26;

#if DDPM_HAS_STB_IMAGE
/// What must hold before stb_image decodes `p[0, n)`: at most 2 GiB, JPEG Huffman tables of at
/// most 256 codes, PNG chunks inside the data, a header stb_image reads, at least 1 and at most
/// kMaxImagePixels pixels, and (unless header_only) enough data for them. Returns
/// the reason it does not ("" when it does), with the header's size and channels in w, h, comp.
/// `header_only`: for a check before reading only the header (stbi_info): the PNG chunks, which
/// only decoding allocates, are left to the decode (a truncated file is then found there).
inline std::string image_bytes_error(const uint8_t* p, size_t n, int* w, int* h, int* comp, bool header_only = false) {
  if (n == 0) return "the file is empty";
  if (n > static_cast<size_t>(INT32_MAX)) return "the file is larger than 2 GiB";
  std::string why = jpeg_huffman_tables_error(p, n);
  if (why.empty() && !header_only) why = png_chunks_error(p, n);
  if (!why.empty()) return why;
  if (!stbi_info_from_memory(p, static_cast<int>(n), w, h, comp)) {
    const char* reason = stbi_failure_reason();
    return std::string("stb_image: ") + (reason ? reason : "unknown error");
  }
  if (*w <= 0 || *h <= 0) return "stb_image: zero-sized image";
  if (static_cast<int64_t>(*w) * *h > kMaxImagePixels) {
    return "its header announces " + std::to_string(*w) + " x " + std::to_string(*h) + " pixels (the limit is " +
           std::to_string(kMaxImagePixels) + " pixels)";
  }
  if (!header_only) return image_data_size_error(p, n, *w, *h);
  return "";
}

/// The PNG in `p[0, n)` without its empty IDAT chunks, or an empty vector when it has none (or is
/// not a PNG). stb_image copies each IDAT chunk onto the end of its growing buffer, which is still
/// a null pointer when the first IDAT is empty: memcpy(nullptr, src, 0), undefined behaviour (found
/// by UBSan in tests/fuzz/fuzz_image). An empty chunk adds no data, so dropping it changes no
/// pixel; stb_image does not check CRCs, and the other chunks are copied whole. Expects chunks that
/// png_chunks_error accepted (every length inside the data).
inline std::vector<uint8_t> png_without_empty_idat(const uint8_t* p, size_t n) {
  if (!is_png(p, n)) return {};
  auto length_at = [&](size_t i) { return png_chunk_length(p, i); };
  auto empty_idat_at = [&](size_t i) { return length_at(i) == 0 && std::memcmp(p + i + 4, "IDAT", 4) == 0; };
  auto whole_chunk_at = [&](size_t i) { return i + 12 <= n && length_at(i) <= n - i - 12; };
  bool any = false;
  for (size_t i = 8; whole_chunk_at(i) && !any; i += 12 + length_at(i)) any = empty_idat_at(i);
  if (!any) return {};
  std::vector<uint8_t> out(p, p + 8);
  out.reserve(n);
  size_t i = 8;
  for (; whole_chunk_at(i); i += 12 + length_at(i)) {
    if (!empty_idat_at(i)) out.insert(out.end(), p + i, p + i + 12 + length_at(i));
  }
  out.insert(out.end(), p + i, p + n);  // whatever trails the last whole chunk
  return out;
}

/// Pixels decoded by stb_image: h x w x channels bytes, interleaved; or the reason they could not be.
struct StbPixels {
  std::vector<uint8_t> data;
  int w = 0, h = 0;
  int channels = 0;   // of `data`: the requested count, or the file's when 0 was requested
  std::string error;  // empty on success
};

/// The one way ddpm decodes image bytes (PNG, JPEG or BMP in `p[0, n)`): image_bytes_error's
/// checks, then stb_image (on a copy without empty IDAT chunks when a PNG has them).
/// `channels`: 1..4 to convert to, 0 for the file's own count.
inline StbPixels stb_decode(const uint8_t* p, size_t n, int channels) {
  StbPixels out;
  int comp = 0;
  out.error = image_bytes_error(p, n, &out.w, &out.h, &comp);
  if (!out.error.empty()) return out;
  const std::vector<uint8_t> cleaned = png_without_empty_idat(p, n);
  if (!cleaned.empty()) {
    p = cleaned.data();
    n = cleaned.size();
  }
  unsigned char* px = stbi_load_from_memory(p, static_cast<int>(n), &out.w, &out.h, &comp, channels);
  if (px == nullptr) {
    const char* why = stbi_failure_reason();
    out.error = std::string("stb_image: ") + (why ? why : "unknown error");
    return out;
  }
  out.channels = channels > 0 ? channels : comp;
  out.data.assign(px, px + static_cast<size_t>(out.w) * static_cast<size_t>(out.h) * static_cast<size_t>(out.channels));
  stbi_image_free(px);
  return out;
}
#endif

}  // namespace detail
}  // namespace ddpm
