#pragma once
// Command-line helpers shared by the examples: parsing with exit status 2 on bad input, and
// readable CLI11 checks for numeric flags. CLI11's own
// NonNegativeNumber/PositiveNumber print DBL_MAX as their upper bound ("not in range
// 0.000000 to 1797693134862315708...") and pass "abc" to that message.
#include <CLI/CLI.hpp>

#include <cerrno>
#include <cstdlib>
#include <string>

namespace ddpm_examples {

/// A CLI11 check for a number: "'s' is not a number" unless s parses whole as a double, else
/// "'s' must be <desc>" unless ok(value); `name` is what --help shows.
template <typename Ok>
CLI::Validator number_check(const std::string& desc, Ok ok, const std::string& name) {
  return CLI::Validator(
      [=](std::string& s) -> std::string {
        errno = 0;
        char* end = nullptr;
        const double v = std::strtod(s.c_str(), &end);
        if (s.empty() || end == s.c_str() || *end != '\0' || errno == ERANGE) return "'" + s + "' is not a number";
        if (!ok(v)) return "'" + s + "' must be " + desc;
        return std::string();
      },
      name);
}

/// Accepts a number > lo (strict) or >= lo; otherwise says what is wrong with the value.
inline CLI::Validator number_above(double lo, bool strict) {
  const std::string desc = std::string(strict ? "> " : ">= ") + std::to_string(static_cast<long long>(lo));
  return number_check(
      desc, [=](double v) { return strict ? v > lo : v >= lo; }, desc == ">= 0" ? "NUMBER>=0" : "NUMBER>0");
}

inline const CLI::Validator non_negative = number_above(0, false);
inline const CLI::Validator positive = number_above(0, true);

/// Parses the command line. On a parse error CLI11 prints its message (or the help) and
/// this returns the exit status: 0 for --help, 2 for any bad flag or value (the contract
/// users script against, instead of CLI11's own codes). Returns -1 when parsing succeeded.
inline int parse_args(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  return -1;
}

}  // namespace ddpm_examples
