#pragma once
// Command-line flags derived from a config's field list (ddpm/detail/fields.hpp): one CLI11
// option per field that has a flag, with the field's help, default, range check and
// choices. The flags given on the command line become a JSON object of overrides that is
// merged over the config file and read with the config's own (strict) from_json, so a flag
// and a config key can never disagree on a name, a range or a meaning.
#include <ddpm/detail/fields.hpp>
#include <ddpm/error.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cli_checks.hpp"

#include <cerrno>
#include <cstdlib>
#include <deque>
#include <stdexcept>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

namespace ddpm_examples {

namespace detail {

// ADL fallback for types without JSON enum names.
template <typename T>
std::vector<std::string> json_enum_choices(const T&) {
  return {};
}

// The CLI11 check for a numeric field's bound.
inline CLI::Validator bound_validator(const ddpm::detail::Bound& b) {
  using K = ddpm::detail::Bound::Kind;
  if (b.kind == K::AtLeast) return number_above(b.lo, false);
  if (b.kind == K::Above) return number_above(b.lo, true);
  const double lo = b.lo, hi = b.hi;
  const std::string desc = b.text();
  return number_check(desc, [=](double v) { return v >= lo && v <= hi; }, "NUMBER " + desc);
}

// "abc" -> JSON of the field's type; throws ddpm::Error saying what is wrong.
template <typename T>
nlohmann::json parse_flag_value(const std::string& flag, const std::string& s) {
  auto bad = [&](const char* what) { return ddpm::Error("--" + flag + ": '" + s + "' is not " + what); };
  if constexpr (std::is_same_v<T, bool>) {
    if (s == "true" || s == "1" || s == "yes" || s == "on") return true;
    if (s == "false" || s == "0" || s == "no" || s == "off") return false;
    throw bad("true or false");
  } else if constexpr (std::is_integral_v<T>) {
    errno = 0;
    char* end = nullptr;
    if (std::is_unsigned_v<T>) {
      const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
      if (s.empty() || s[0] == '-' || *end != '\0' || errno == ERANGE) throw bad("a non-negative integer");
      return static_cast<uint64_t>(v);
    }
    const long long v = std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || *end != '\0' || errno == ERANGE) throw bad("an integer");
    return static_cast<int64_t>(v);
  } else if constexpr (std::is_floating_point_v<T>) {
    errno = 0;
    char* end = nullptr;
    const double v = std::strtod(s.c_str(), &end);
    if (s.empty() || *end != '\0' || errno == ERANGE) throw bad("a number");
    return v;
  } else {
    return s;  // strings, enums (by name), nlohmann::json values given as a string
  }
}

template <typename T>
constexpr bool flag_type_supported() {
  return std::is_arithmetic_v<T> || std::is_enum_v<T> || std::is_same_v<T, std::string> ||
         std::is_same_v<T, nlohmann::json>;
}

}  // namespace detail

/// The flags of config type C. add_to() registers them; overrides() returns the given ones.
template <typename C>
class ConfigFlags {
 public:
  /// Registers "--<flag>" for every field of C with a flag; help ends with the default.
  void add_to(CLI::App& app) {
    const C defaults{};
    const nlohmann::json dj = ddpm::detail::fields_to_json(defaults);
    ddpm::detail::for_each_field(defaults, [&](const ddpm::detail::FieldSpec& spec, const auto& member,
                                               const auto&) {
      using T = std::decay_t<decltype(member)>;
      const std::string flag = ddpm::detail::flag_name(spec);
      if (flag.empty()) return;
      if constexpr (!detail::flag_type_supported<T>()) {
        throw std::logic_error(std::string("config field ") + spec.key + " has a flag but no string form");
      } else {
        entries_.push_back(Entry{spec.key, flag, "", nullptr, &detail::parse_flag_value<T>});
        Entry& e = entries_.back();
        std::string help = spec.help;
        help += " (default " + (dj.at(spec.key).is_string() ? dj.at(spec.key).template get<std::string>()
                                                              : dj.at(spec.key).dump()) + ")";
        std::vector<std::string> choices;
        if constexpr (std::is_enum_v<T>) {
          using detail::json_enum_choices;
          choices = json_enum_choices(member);
        }
        if (spec.choices != nullptr) choices = spec.choices();
        e.option = app.add_option("--" + flag, e.value, help);
        if (!choices.empty()) e.option->check(CLI::IsMember(choices));
        if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
          if (spec.bound.kind != ddpm::detail::Bound::None) e.option->check(detail::bound_validator(spec.bound));
        }
      }
    });
  }

  /// The given flags as a JSON object {key: value} (typed like the field); throws
  /// ddpm::Error for a value of the wrong type.
  nlohmann::json overrides() const {
    nlohmann::json j = nlohmann::json::object();
    for (const auto& e : entries_) {
      if (e.option != nullptr && e.option->count() > 0) j[e.key] = e.parse(e.flag, e.value);
    }
    return j;
  }

  /// Whether --<flag> of field `key` was given, and its raw value.
  const std::string* given(const std::string& key) const {
    for (const auto& e : entries_) {
      if (e.key == key && e.option != nullptr && e.option->count() > 0) return &e.value;
    }
    return nullptr;
  }

 private:
  struct Entry {
    std::string key;
    std::string flag;
    std::string value;
    CLI::Option* option;
    nlohmann::json (*parse)(const std::string&, const std::string&);
  };
  std::deque<Entry> entries_;  // deque: push_back keeps references to earlier entries valid
};

}  // namespace ddpm_examples
