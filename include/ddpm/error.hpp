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

}  // namespace ddpm
