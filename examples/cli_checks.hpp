#pragma once
// Readable CLI11 checks for numeric flags, shared by the examples. CLI11's own
// NonNegativeNumber/PositiveNumber print DBL_MAX as their upper bound ("not in range
// 0.000000 to 1797693134862315708...") and pass "abc" to that message.
#include <CLI/CLI.hpp>

#include <cerrno>
#include <cstdlib>
#include <string>

namespace ddpm_examples {

/// Accepts a number > lo (strict) or >= lo; otherwise says what is wrong with the value.
inline CLI::Validator number_above(double lo, bool strict) {
  const std::string desc = std::string(strict ? "> " : ">= ") + std::to_string(static_cast<long long>(lo));
  return CLI::Validator(
      [=](std::string& s) -> std::string {
        errno = 0;
        char* end = nullptr;
        const double v = std::strtod(s.c_str(), &end);
        if (s.empty() || end == s.c_str() || *end != '\0' || errno == ERANGE) return "'" + s + "' is not a number";
        if (strict ? !(v > lo) : !(v >= lo)) return "'" + s + "' must be " + desc;
        return std::string();
      },
      desc == ">= 0" ? "NUMBER>=0" : "NUMBER>0");
}

inline const CLI::Validator non_negative = number_above(0, false);
inline const CLI::Validator positive = number_above(0, true);

}  // namespace ddpm_examples
