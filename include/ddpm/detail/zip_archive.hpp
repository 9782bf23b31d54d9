#pragma once
/// Structural validation of a LibTorch serialize archive (a ZIP file, PKWARE APPNOTE 6.3) before
/// LibTorch's own reader sees it.
///
/// LibTorch's archive reader (caffe2::serialize::PyTorchStreamReader over miniz, then the
/// TorchScript unpickler) trusts the archive it is given: a crafted record table can make it read
/// out of bounds, allocate what a record claims to inflate to, or throw exception types nobody
/// expects. check_zip_archive checks, with bounded work and no allocation beyond the record list:
///  - the end-of-central-directory record (and its ZIP64 form, which LibTorch always writes) lies
///    inside the bytes, on one disk, with the record count, size and offset of the central
///    directory inside the bytes (checked arithmetic throughout);
///  - every central-directory entry: its signature, a stored (0) or deflated (8) method, a stored
///    record's sizes equal, a deflated record inflating at most kMaxDeflateRatio times its size and
///    to at most kMaxArchiveRecordBytes, no encryption, a name of 1..kMaxArchiveNameBytes bytes
///    without NUL, '\\' or "..", names unique, all under one top-level folder;
///  - every local header: inside the bytes, its signature, its name equal to the directory's, its
///    data inside the bytes and before the next record (records never overlap);
///  - the folder holds `data.pkl` and a `version` record whose text is a small decimal number.
/// What it cannot check is what data.pkl says (the pickle LibTorch interprets): checkpoints stay
/// trusted files, as pickles are (docs/reliability.md).
#include <ddpm/error.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <set>
#include <string>
#include <vector>

namespace ddpm {
namespace detail {

constexpr uint64_t kMaxArchiveRecords = uint64_t{1} << 20;
constexpr uint64_t kMaxArchiveNameBytes = 4096;
constexpr uint64_t kMaxArchiveRecordBytes = uint64_t{16} << 30;
constexpr uint64_t kMaxDeflateRatio = 1032;  // deflate's own ceiling (RFC 1951: 258 bytes per 2 bits)

/// One record of a ZIP archive, as check_zip_archive found it.
struct ZipRecord {
  std::string name;
  uint16_t method = 0;
  uint64_t header_offset = 0;  ///< of its local header
  uint64_t data_offset = 0;    ///< of its (stored or deflated) bytes
  uint64_t compressed_size = 0;
  uint64_t uncompressed_size = 0;
};

inline uint64_t zip_le(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

/// Checks the structure of the ZIP archive `data[0, size)` (see the file comment) and returns its
/// records in directory order. Throws ddpm::Error naming `what` (the file) and the byte offset at
/// fault.
inline std::vector<ZipRecord> check_zip_archive(const uint8_t* data, uint64_t size, const std::string& what) {
  auto fail = [&](uint64_t offset, const std::string& why) -> void {
    throw Error(what + ": not a valid LibTorch archive: " + why + " (archive byte offset " + std::to_string(offset) + ")");
  };
  // Bounds check for [offset, offset + len) without overflow.
  auto inside = [&](uint64_t offset, uint64_t len) { return offset <= size && len <= size - offset; };

  constexpr uint64_t kEocd = 22, kLocator = 20, kZip64Eocd = 56, kCentral = 46, kLocal = 30;
  if (size < kEocd) fail(0, "it is " + std::to_string(size) + " bytes, shorter than an end-of-directory record");
  // The end-of-central-directory record: the last signature within the 64 KiB comment window.
  uint64_t eocd = size;
  const uint64_t lowest = size - kEocd > 0xFFFF ? size - kEocd - 0xFFFF : 0;
  for (uint64_t p = size - kEocd + 1; p-- > lowest;) {
    if (zip_le(data + p, 4) == 0x06054b50 && p + kEocd + zip_le(data + p + 20, 2) == size) {
      eocd = p;
      break;
    }
  }
  if (eocd == size) fail(size, "no end-of-central-directory record");
  const uint8_t* e = data + eocd;
  if (zip_le(e + 4, 2) != 0 || zip_le(e + 6, 2) != 0) fail(eocd, "a multi-disk archive");
  uint64_t entries = zip_le(e + 10, 2);
  if (zip_le(e + 8, 2) != entries) fail(eocd + 8, "its record counts disagree");
  uint64_t cd_size = zip_le(e + 12, 4);
  uint64_t cd_offset = zip_le(e + 16, 4);
  uint64_t cd_end_limit = eocd;  // the central directory ends before this
  if (eocd >= kLocator && zip_le(data + eocd - kLocator, 4) == 0x07064b50) {
    const uint8_t* loc = data + eocd - kLocator;
    const uint64_t z_off = zip_le(loc + 8, 8);
    if (zip_le(loc + 4, 4) != 0 || zip_le(loc + 16, 4) > 1) fail(eocd - kLocator, "a multi-disk archive");
    if (!inside(z_off, kZip64Eocd) || z_off + kZip64Eocd > eocd - kLocator) {
      fail(eocd - kLocator, "its ZIP64 end record offset " + std::to_string(z_off) + " lies outside the archive");
    }
    const uint8_t* z = data + z_off;
    if (zip_le(z, 4) != 0x06064b50) fail(z_off, "bad ZIP64 end record signature");
    if (zip_le(z + 16, 4) != 0 || zip_le(z + 20, 4) != 0) fail(z_off, "a multi-disk archive");
    entries = zip_le(z + 32, 8);
    if (zip_le(z + 24, 8) != entries) fail(z_off + 24, "its record counts disagree");
    cd_size = zip_le(z + 40, 8);
    cd_offset = zip_le(z + 48, 8);
    cd_end_limit = z_off;
  }
  if (entries == 0) fail(eocd, "it holds no records");
  if (entries > kMaxArchiveRecords) {
    fail(eocd, std::to_string(entries) + " records, above the limit of " + std::to_string(kMaxArchiveRecords));
  }
  if (!inside(cd_offset, cd_size) || cd_offset + cd_size > cd_end_limit) {
    fail(eocd, "its central directory [" + std::to_string(cd_offset) + ", +" + std::to_string(cd_size) +
                   ") lies outside the archive");
  }
  if (cd_size / kCentral < entries) {
    fail(eocd, std::to_string(entries) + " records cannot fit a " + std::to_string(cd_size) + "-byte directory");
  }

  std::vector<ZipRecord> records;
  records.reserve(static_cast<size_t>(entries));
  std::set<std::string> names;
  uint64_t p = cd_offset;
  const uint64_t cd_end = cd_offset + cd_size;
  for (uint64_t i = 0; i < entries; ++i) {
    if (p > cd_end || cd_end - p < kCentral) fail(p, "record " + std::to_string(i) + " runs past the central directory");
    const uint8_t* c = data + p;
    if (zip_le(c, 4) != 0x02014b50) fail(p, "bad central directory signature of record " + std::to_string(i));
    ZipRecord r;
    const uint64_t flags = zip_le(c + 8, 2);
    r.method = static_cast<uint16_t>(zip_le(c + 10, 2));
    r.compressed_size = zip_le(c + 20, 4);
    r.uncompressed_size = zip_le(c + 24, 4);
    const uint64_t name_len = zip_le(c + 28, 2), extra_len = zip_le(c + 30, 2), comment_len = zip_le(c + 32, 2);
    if (zip_le(c + 34, 2) != 0) fail(p + 34, "a multi-disk archive");
    r.header_offset = zip_le(c + 42, 4);
    const uint64_t entry_len = kCentral + name_len + extra_len + comment_len;
    if (cd_end - p < entry_len) fail(p, "record " + std::to_string(i) + " runs past the central directory");
    if (name_len == 0 || name_len > kMaxArchiveNameBytes) {
      fail(p + 28, "record " + std::to_string(i) + " has a name of " + std::to_string(name_len) + " bytes");
    }
    r.name.assign(reinterpret_cast<const char*>(c + kCentral), static_cast<size_t>(name_len));
    if (r.name.find('\0') != std::string::npos || r.name.find('\\') != std::string::npos ||
        r.name.find("..") != std::string::npos || r.name[0] == '/') {
      fail(p + kCentral, "record " + std::to_string(i) + " has an unsafe name");
    }
    // ZIP64 extended information: the 64-bit values of the fields saturated at 0xFFFFFFFF, in order.
    const uint8_t* x = c + kCentral + name_len;
    for (uint64_t q = 0; q + 4 <= extra_len;) {
      const uint64_t id = zip_le(x + q, 2), len = zip_le(x + q + 2, 2);
      if (q + 4 + len > extra_len) fail(p + kCentral + name_len + q, "a malformed extra field in record " + r.name);
      if (id == 0x0001) {
        uint64_t at = q + 4;
        auto take = [&](uint64_t& field) {
          if (field != 0xFFFFFFFFu) return;
          if (at + 8 > q + 4 + len) fail(p + kCentral + name_len + q, "a short ZIP64 field in record " + r.name);
          field = zip_le(x + at, 8);
          at += 8;
        };
        take(r.uncompressed_size);
        take(r.compressed_size);
        take(r.header_offset);
      }
      q += 4 + len;
    }
    if (flags & 0x41) fail(p + 8, "record " + r.name + " is encrypted");
    if (r.method != 0 && r.method != 8) {
      fail(p + 10, "record " + r.name + " uses compression method " + std::to_string(r.method) + " (only stored and deflated)");
    }
    if (r.method == 0 && r.compressed_size != r.uncompressed_size) {
      fail(p + 20, "stored record " + r.name + " has sizes " + std::to_string(r.compressed_size) + " and " +
                       std::to_string(r.uncompressed_size));
    }
    if (r.uncompressed_size > kMaxArchiveRecordBytes ||
        (r.method == 8 && r.uncompressed_size / kMaxDeflateRatio > r.compressed_size)) {
      fail(p + 24, "record " + r.name + " claims to inflate " + std::to_string(r.compressed_size) + " bytes to " +
                       std::to_string(r.uncompressed_size));
    }
    // Its local header: inside the bytes before the directory, naming the same record.
    const uint64_t h = r.header_offset;
    if (!inside(h, kLocal) || h + kLocal > cd_offset) fail(p + 42, "record " + r.name + " has its header outside the archive");
    const uint8_t* l = data + h;
    if (zip_le(l, 4) != 0x04034b50) fail(h, "bad local header signature of record " + r.name);
    const uint64_t l_name = zip_le(l + 26, 2), l_extra = zip_le(l + 28, 2);
    if (l_name != name_len || std::memcmp(l + kLocal, r.name.data(), static_cast<size_t>(name_len)) != 0) {
      fail(h + kLocal, "the local header of record " + r.name + " names another record");
    }
    r.data_offset = h + kLocal + l_name + l_extra;
    if (r.data_offset > cd_offset || r.compressed_size > cd_offset - r.data_offset) {
      fail(h, "the data of record " + r.name + " runs past the central directory");
    }
    if (!names.insert(r.name).second) fail(p + kCentral, "record " + r.name + " appears twice");
    records.push_back(std::move(r));
    p += entry_len;
  }
  // Records never overlap: each one's data ends at or before the next local header.
  std::vector<const ZipRecord*> by_offset;
  by_offset.reserve(records.size());
  for (const auto& r : records) by_offset.push_back(&r);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const ZipRecord* a, const ZipRecord* b) { return a->header_offset < b->header_offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const ZipRecord& prev = *by_offset[i - 1];
    if (prev.data_offset + prev.compressed_size > by_offset[i]->header_offset) {
      fail(by_offset[i]->header_offset, "records " + prev.name + " and " + by_offset[i]->name + " overlap");
    }
  }
  // One top-level folder holding data.pkl and version.
  const std::string& first = records.front().name;
  const size_t slash = first.find('/');
  if (slash == std::string::npos || slash == 0) fail(cd_offset, "record " + first + " is not inside a folder");
  const std::string folder = first.substr(0, slash + 1);
  for (const auto& r : records) {
    if (r.name.compare(0, folder.size(), folder) != 0) fail(r.header_offset, "record " + r.name + " is outside " + folder);
  }
  if (names.count(folder + "data.pkl") == 0) fail(cd_offset, "it has no " + folder + "data.pkl");
  auto version = std::find_if(records.begin(), records.end(), [&](const ZipRecord& r) { return r.name == folder + "version"; });
  if (version == records.end()) fail(cd_offset, "it has no " + folder + "version");
  bool digits = version->method == 0 && version->compressed_size >= 1 && version->compressed_size <= 8;
  for (uint64_t k = 0; digits && k < version->compressed_size; ++k) {
    const uint8_t ch = data[version->data_offset + k];
    digits = (ch >= '0' && ch <= '9') || (ch == '\n' && k + 1 == version->compressed_size && k > 0);
  }
  if (!digits) fail(version->data_offset, "its version record is not a small decimal number");
  return records;
}

}  // namespace detail
}  // namespace ddpm
