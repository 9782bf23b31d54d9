// The structural check of a checkpoint's LibTorch archive (detail::check_zip_archive) before
// LibTorch parses it: a real archive passes with its records where the ZIP format puts them, and
// each crafted record table (issue 17: a valid CRC around a hostile archive) is refused with a
// ddpm::Error naming the file and the byte offset, by the check and by read_checkpoint_file.
#include <ddpm/detail/zip_archive.hpp>
#include <ddpm/train/checkpoint.hpp>

#include <torch/serialize/archive.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.hpp"

namespace {

using Bytes = std::vector<uint8_t>;

/// A LibTorch archive as ddpm checkpoints hold one: nested archives, tensors, a string.
Bytes real_archive() {
  torch::serialize::OutputArchive a, inner;
  inner.write("w", torch::arange(12, torch::kFloat32).reshape({3, 4}));
  a.write("ema", inner);
  a.write("step", torch::tensor(int64_t{5}), true);
  ddpm::archive_write_string(a, "config", std::string(300, 'c'));
  std::ostringstream out;
  a.save_to(out);
  const std::string s = out.str();
  return Bytes(s.begin(), s.end());
}

uint64_t le(const Bytes& b, size_t at, int n) { return ddpm::detail::zip_le(b.data() + at, n); }
void put(Bytes& b, size_t at, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
}
/// Offsets of every occurrence of the 4-byte little-endian signature `sig`.
std::vector<size_t> find_sig(const Bytes& b, uint32_t sig) {
  std::vector<size_t> out;
  for (size_t i = 0; i + 4 <= b.size(); ++i) {
    if (le(b, i, 4) == sig) out.push_back(i);
  }
  return out;
}

std::string check_error(const Bytes& b) {
  return ddpm_test::error_of([&] { (void)ddpm::detail::check_zip_archive(b.data(), b.size(), "checkpoint 'x.pt'"); });
}

/// `payload` behind a valid ddpm header (right size and CRC-32), at `path`.
void write_checkpoint(const std::string& path, const Bytes& payload) {
  Bytes file(ddpm::detail::kCheckpointMagic, ddpm::detail::kCheckpointMagic + 8);
  ddpm::detail::put_le(file, ddpm::detail::kCheckpointVersion, 4);
  ddpm::detail::put_le(file, payload.size(), 8);
  ddpm::detail::put_le(file, ddpm::detail::crc32_of(payload.data(), payload.size()), 4);
  file.insert(file.end(), payload.begin(), payload.end());
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(file.data()),
                                              static_cast<std::streamsize>(file.size()));
}

}  // namespace

TEST_CASE("archive check: a LibTorch archive passes, its records where the ZIP format puts them", "[limits][archive]") {
  const Bytes b = real_archive();
  const auto records = ddpm::detail::check_zip_archive(b.data(), b.size(), "a");
  // Independently of the check: every record's local header is a "PK\3\4" at its offset, whose
  // name field holds the record's name, and the directory has one "PK\1\2" per record.
  CHECK(find_sig(b, 0x02014b50).size() == records.size());
  bool has_pkl = false, has_version = false;
  for (const auto& r : records) {
    REQUIRE(r.header_offset + 30 + r.name.size() <= b.size());
    CHECK(le(b, r.header_offset, 4) == 0x04034b50);
    CHECK(std::string(b.begin() + r.header_offset + 30, b.begin() + r.header_offset + 30 + r.name.size()) == r.name);
    CHECK(r.data_offset + r.compressed_size <= b.size());
    has_pkl |= r.name == "archive/data.pkl";
    has_version |= r.name == "archive/version";
    if (r.method == 0) CHECK(r.compressed_size == r.uncompressed_size);
  }
  CHECK(has_pkl);
  CHECK(has_version);
  // The 300-byte string and the 48-byte tensor are stored records of exactly those sizes.
  int sized = 0;
  for (const auto& r : records) sized += r.method == 0 && (r.uncompressed_size == 48);
  CHECK(sized >= 1);
}

TEST_CASE("archive check: crafted record tables are refused before LibTorch parses them", "[limits][archive]") {
  const Bytes good = real_archive();
  const auto records = ddpm::detail::check_zip_archive(good.data(), good.size(), "a");
  const auto central = find_sig(good, 0x02014b50);
  REQUIRE(central.size() == records.size());
  size_t stored = 0, deflated = SIZE_MAX;
  for (size_t i = 0; i < records.size(); ++i) {
    if (records[i].method == 8 && deflated == SIZE_MAX) deflated = i;
    if (records[i].method == 0 && records[i].compressed_size > 0) stored = i;
  }
  struct Case {
    const char* what;
    std::function<void(Bytes&)> mutate;
    const char* message;
  };
  std::vector<Case> cases = {
      {"cut end record", [](Bytes& b) { b.pop_back(); }, "no end-of-central-directory record"},
      {"header offset past the end", [&](Bytes& b) { put(b, central[1] + 42, 0x7FFFFFF0, 4); },
       "has its header outside the archive"},
      {"stored sizes differ", [&](Bytes& b) { put(b, central[stored] + 24, le(b, central[stored] + 24, 4) + 1, 4); },
       "has sizes"},
      {"data runs past the directory", [&](Bytes& b) {
         const uint64_t big = le(b, central[stored] + 20, 4) + (uint64_t{1} << 24);
         put(b, central[stored] + 20, big, 4);
         put(b, central[stored] + 24, big, 4);
       }, "runs past the central directory"},
      {"a header naming another record", [&](Bytes& b) { put(b, central[1] + 42, le(b, central[0] + 42, 4), 4); },
       "names another record"},
      {"an unsafe name", [&](Bytes& b) {
         b[central[0] + 46] = '.';
         b[central[0] + 47] = '.';
       }, "unsafe name"},
      {"an unknown method", [&](Bytes& b) { put(b, central[0] + 10, 12, 2); }, "compression method 12"},
      {"an encrypted record", [&](Bytes& b) { put(b, central[0] + 8, le(b, central[0] + 8, 2) | 1, 2); }, "encrypted"},
      {"a billion records", [&](Bytes& b) {
         const size_t z = find_sig(b, 0x06064b50).at(0);
         put(b, z + 24, uint64_t{1} << 30, 8);
         put(b, z + 32, uint64_t{1} << 30, 8);
       }, "above the limit"},
      {"a directory offset past the end", [&](Bytes& b) {
         const size_t z = find_sig(b, 0x06064b50).at(0);
         put(b, z + 48, uint64_t{1} << 62, 8);
       }, "lies outside the archive"},
      {"a version that is not a number", [&](Bytes& b) {
         for (const auto& r : records) {
           if (r.name == "archive/version") b[r.data_offset] = 'x';
         }
       }, "version record"},
  };
  if (deflated != SIZE_MAX) {
    cases.push_back({"a deflate bomb", [&](Bytes& b) { put(b, central[deflated] + 24, 0xF0000000u, 4); }, "claims to inflate"});
  }
  ddpm_test::TempDir dir("archive");
  for (const auto& c : cases) {
    INFO(c.what);
    Bytes b = good;
    c.mutate(b);
    const std::string err = check_error(b);
    CHECK_THAT(err, Catch::Contains("checkpoint 'x.pt': not a valid LibTorch archive") && Catch::Contains(c.message) &&
                        Catch::Contains("archive byte offset"));
    // Behind a valid header and CRC, the checkpoint reader refuses it the same way.
    const std::string path = (dir.path / "ckpt-000000001.pt").string();
    write_checkpoint(path, b);
    torch::serialize::InputArchive a;
    CHECK_THAT(ddpm_test::error_of([&] { ddpm::read_checkpoint_file(path, a); }),
               Catch::Contains("checkpoint '" + path + "': not a valid LibTorch archive") && Catch::Contains(c.message));
  }
  // Not a ZIP file at all, and too short for one.
  CHECK_THAT(check_error(Bytes(100, 'x')), Catch::Contains("no end-of-central-directory record"));
  CHECK_THAT(check_error(Bytes(5, 0)), Catch::Contains("shorter than an end-of-directory record"));
}
