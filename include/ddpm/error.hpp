#pragma once
/// ddpm's exception type. Argument and shape checks on tensors use TORCH_CHECK
/// (which throws c10::Error); errors about files, configs and JSON throw ddpm::Error
/// with a message naming the file, key or value at fault.
#include <stdexcept>
#include <string>

namespace ddpm {

/// Raised for bad files, bad configuration and bad JSON. Derives from
/// std::runtime_error so `catch (const std::exception&)` sees it.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error("ddpm: " + what) {}
};

/// Raised when the machine refuses a write the input was fine for: a checkpoint, a PNG, a
/// JSON or safetensors file that cannot be written or renamed into place (disk full,
/// permissions). The example CLIs exit with status 3 for it (2: bad input). Files written
/// before it are left as they were.
class IoError : public Error {
 public:
  explicit IoError(const std::string& what) : Error(what) {}
};

}  // namespace ddpm
