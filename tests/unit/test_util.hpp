#pragma once
/// Helpers shared by the test files: temporary directories and error-message checks.
#include <ddpm/error.hpp>

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

namespace ddpm_test {

/// A fresh, uniquely named temporary directory (mkdtemp), removed at scope exit.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& tag) {
    std::string tmpl = (std::filesystem::temp_directory_path() / ("ddpm_" + tag + "_XXXXXX")).string();
    const char* made = ::mkdtemp(tmpl.data());
    REQUIRE(made != nullptr);
    path = made;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  /// Path of `name` inside the directory.
  std::string file(const std::string& name) const { return (path / name).string(); }
  std::string str() const { return path.string(); }
};

/// A fresh temporary directory that lives until the test process exits (for helpers that
/// hand out plain paths); removed then like a TempDir.
inline std::string process_temp_dir(const std::string& tag) {
  static std::vector<std::unique_ptr<TempDir>> dirs;
  dirs.push_back(std::make_unique<TempDir>(tag));
  return dirs.back()->str();
}

/// Writes `bytes` to `path`, creating its parent directories.
inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);  // a bare file name has none
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(f.good());
}

/// The message of whatever std::exception `f` throws; "" when it throws nothing.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

/// Runs `fn`, which must throw ddpm::Error whose message contains every string in `parts`.
template <typename F>
void require_error(F&& fn, std::initializer_list<std::string> parts) {
  bool thrown = false;
  try {
    fn();
  } catch (const ddpm::Error& e) {
    thrown = true;
    const std::string msg = e.what();
    INFO("message: " << msg);
    for (const auto& p : parts) CHECK(msg.find(p) != std::string::npos);
  }
  CHECK(thrown);
}

}  // namespace ddpm_test
