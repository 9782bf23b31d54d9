#pragma once
/// Helpers to (de)serialize enums as strings with nlohmann_json, rejecting
/// unknown names with the list of valid ones.
#include <ddpm/detail/json_util.hpp>
#include <ddpm/error.hpp>

#include <nlohmann/json.hpp>

#include <string>
#include <utility>
#include <vector>

namespace ddpm::detail {

/// One name <-> value pair of an enum's JSON spelling.
template <typename E>
using EnumNames = std::vector<std::pair<E, const char*>>;

/// "a", "b", "c" — for error messages.
template <typename E>
std::string enum_name_list(const EnumNames<E>& names) {
  std::string out;
  for (const auto& [value, name] : names) {
    if (!out.empty()) out += ", ";
    out += '"';
    out += name;
    out += '"';
  }
  return out;
}

/// Parses `name` into the enum; throws ddpm::Error naming `what`, the bad name
/// and every valid name.
template <typename E>
E enum_from_string(const std::string& name, const EnumNames<E>& names, const char* what) {
  for (const auto& [value, n] : names) {
    if (name == n) return value;
  }
  throw Error(std::string("unknown ") + what + " \"" + name + "\"; valid values are " +
              enum_name_list(names));
}

/// The JSON spelling of `value`.
template <typename E>
const char* enum_to_string(E value, const EnumNames<E>& names, const char* what) {
  for (const auto& [v, n] : names) {
    if (v == value) return n;
  }
  throw Error(std::string("invalid ") + what + " value " + std::to_string(static_cast<int>(value)));
}

/// Reads a JSON string into the enum (throws ddpm::Error if not a string or unknown).
template <typename E>
E enum_from_json(const nlohmann::json& j, const EnumNames<E>& names, const char* what) {
  if (!j.is_string()) {
    throw Error(std::string(what) + " must be a string, got " + truncated_dump(j) + "; valid values are " +
                enum_name_list(names));
  }
  return enum_from_string(j.get<std::string>(), names, what);
}

/// Every JSON spelling of an enum, in declaration order (for --help and flag checks).
template <typename E>
std::vector<std::string> enum_names_of(const EnumNames<E>& names) {
  std::vector<std::string> out;
  for (const auto& [value, name] : names) out.emplace_back(name);
  return out;
}

}  // namespace ddpm::detail

/// Declares to_json/from_json and json_enum_choices (found by ADL: the valid names) for
/// enum E in the enclosing namespace using a function `names_fn()` returning
/// EnumNames<E>, and `what` for messages.
#define DDPM_JSON_ENUM(E, names_fn, what)                                          \
  inline void to_json(nlohmann::json& j, const E& e) {                             \
    j = ::ddpm::detail::enum_to_string(e, names_fn(), what);                       \
  }                                                                                \
  inline void from_json(const nlohmann::json& j, E& e) {                           \
    e = ::ddpm::detail::enum_from_json(j, names_fn(), what);                       \
  }                                                                                \
  inline std::vector<std::string> json_enum_choices(const E&) {                    \
    return ::ddpm::detail::enum_names_of(names_fn());                              \
  }
