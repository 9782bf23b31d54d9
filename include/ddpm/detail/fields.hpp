#pragma once
/// One declaration per config field. A config type lists its fields once, in a static
/// member template
///
///   template <class Self, class V> static void fields(Self& self, V& v) {
///     v(FieldSpec{"steps", "total optimizer steps", at_least(0)}, self.steps);
///     v(FieldSpec{"freq_shift", "..."}, self.freq_shift(), IntegralNumberCodec{});
///     ...
///   }
///
/// (Self is the config or the const config; the optional third argument is a codec for a
/// field whose JSON form is not nlohmann's default.) Everything that used to repeat the
/// keys is derived from that list: fields_to_json, fields_from_json (strict: an unknown key
/// is an error listing the known ones), field_keys, validate_fields (ranges and choices,
/// ddpm::Error naming the key and value) and, in the examples, the command-line flags
/// (examples/config_flags.hpp: CLI11 is an example dependency, not the library's).
#include <ddpm/detail/json_util.hpp>
#include <ddpm/error.hpp>

#include <nlohmann/json.hpp>

#include <c10/util/Optional.h>

#include <cmath>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

namespace ddpm::detail {

/// Shortest readable form of a number for messages ("13.5", not "13.500000").
inline std::string format_number(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

/// Range of a numeric field, checked on every config (validate_fields) and on the flag.
struct Bound {
  enum Kind { None, AtLeast, Above, Between };
  Kind kind = None;
  double lo = 0;
  double hi = 0;

  /// True when `v` is inside (always true for None; NaN is never inside a bound).
  bool contains(double v) const {
    switch (kind) {
      case None: return true;
      case AtLeast: return v >= lo;
      case Above: return v > lo;
      case Between: return v >= lo && v <= hi;
    }
    return true;
  }
  /// ">= 0", "> 0", "in [0, 1]" ("" for None).
  std::string text() const {
    switch (kind) {
      case None: return "";
      case AtLeast: return ">= " + format_number(lo);
      case Above: return "> " + format_number(lo);
      case Between: return "in [" + format_number(lo) + ", " + format_number(hi) + "]";
    }
    return "";
  }
};
constexpr Bound at_least(double lo) { return {Bound::AtLeast, lo, 0}; }
constexpr Bound above(double lo) { return {Bound::Above, lo, 0}; }
constexpr Bound between(double lo, double hi) { return {Bound::Between, lo, hi}; }

/// The declaration of one field.
struct FieldSpec {
  /// JSON key.
  const char* key;
  /// One line of help (config docs, --help).
  const char* help = "";
  /// Range of a numeric field.
  Bound bound{};
  /// The valid values of a string field (nullptr: any string); enums list theirs themselves.
  std::vector<std::string> (*choices)() = nullptr;
  /// Command-line flag without "--": nullptr = the key with '_' -> '-', "" = no flag.
  const char* flag = nullptr;
};

/// The command-line flag of `spec` ("" when it has none).
inline std::string flag_name(const FieldSpec& spec) {
  if (spec.flag != nullptr) return spec.flag;
  std::string f = spec.key;
  for (auto& ch : f) {
    if (ch == '_') ch = '-';
  }
  return f;
}

template <typename T>
struct IsOptional : std::false_type {};
template <typename T>
struct IsOptional<c10::optional<T>> : std::true_type {};

template <typename T>
struct IsIntegerVector : std::false_type {};
template <typename I>
struct IsIntegerVector<std::vector<I>> : std::bool_constant<std::is_integral_v<I> && !std::is_same_v<I, bool>> {};

/// `j` as T: integers and lists of integers through json_integer (no truncation or
/// wrap-around), the rest as nlohmann reads them.
template <typename T>
T json_value(const nlohmann::json& j) {
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    return json_integer<T>(j);
  } else if constexpr (IsIntegerVector<T>::value) {
    if (!j.is_array()) throw Error("must be a list of integers, got " + truncated_dump(j));
    T out;
    out.reserve(j.size());
    for (const auto& e : j) out.push_back(json_integer<typename T::value_type>(e));
    return out;
  } else {
    return j.get<T>();
  }
}

/// nlohmann's JSON form; c10::optional is null or the value.
struct PlainCodec {
  template <typename T>
  nlohmann::json to(const T& v) const {
    if constexpr (IsOptional<T>::value) {
      return v.has_value() ? nlohmann::json(*v) : nlohmann::json(nullptr);
    } else {
      return nlohmann::json(v);
    }
  }
  template <typename T>
  void from(const nlohmann::json& j, T& v) const {
    if constexpr (IsOptional<T>::value) {
      if (j.is_null()) {
        v = c10::nullopt;
      } else {
        v = json_value<typename T::value_type>(j);
      }
    } else {
      v = json_value<T>(j);
    }
  }
};

/// A double written as an integer when it is integral (diffusers writes freq_shift: 1).
struct IntegralNumberCodec {
  nlohmann::json to(double v) const {
    if (std::isfinite(v) && v == std::floor(v) && std::abs(v) < 1e15) return static_cast<int64_t>(v);
    return v;
  }
  void from(const nlohmann::json& j, double& v) const { v = j.get<double>(); }
};

/// Adapts a visitor f(spec, member, codec) to the two call forms a fields() list uses.
template <typename F>
struct FieldVisitor {
  F& f;
  template <typename T>
  void operator()(const FieldSpec& spec, T& member) {
    f(spec, member, PlainCodec{});
  }
  template <typename T, typename Codec>
  void operator()(const FieldSpec& spec, T& member, const Codec& codec) {
    f(spec, member, codec);
  }
};

/// Calls f(spec, member, codec) for every field of `c` (const or not), in declaration order.
template <typename C, typename F>
void for_each_field(C& c, F&& f) {
  FieldVisitor<std::remove_reference_t<F>> v{f};
  std::remove_const_t<C>::fields(c, v);
}

/// Every JSON key of C, in declaration order.
template <typename C>
std::vector<std::string> field_keys() {
  std::vector<std::string> keys;
  const C c{};
  for_each_field(c, [&](const FieldSpec& s, const auto&, const auto&) { keys.emplace_back(s.key); });
  return keys;
}

/// "a", "b", "c".
inline std::string quoted_join(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "\"" : ", \"") + n + "\"";
  return out;
}

/// Throws ddpm::Error if `j` is not an object or holds a key outside `known` (keys starting
/// with '_', such as diffusers' "_class_name", are allowed).
inline void check_keys(const nlohmann::json& j, const std::vector<std::string>& known, const std::string& context) {
  if (!j.is_object()) throw Error(context + " must be a JSON object, got " + truncated_dump(j));
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    if (!key.empty() && key[0] == '_') continue;
    bool ok = false;
    for (const auto& k : known) ok = ok || k == key;
    if (!ok) {
      std::string list;
      for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
      throw Error(context + ": unknown key \"" + key + "\" (known keys: " + list + ")");
    }
  }
}

/// Checks one field's bound and choices; throws ddpm::Error naming context, key and value.
template <typename T>
void check_field(const FieldSpec& s, const T& v, const std::string& context) {
  if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
    if (!s.bound.contains(static_cast<double>(v))) {
      throw Error(context + ": \"" + s.key + "\" must be " + s.bound.text() + ", got " +
                  format_number(static_cast<double>(v)));
    }
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (s.choices != nullptr) {
      const auto valid = s.choices();
      bool ok = false;
      for (const auto& c : valid) ok = ok || c == v;
      if (!ok) {
        throw Error(context + ": \"" + s.key + "\" must be one of " + quoted_join(valid) + ", got \"" + v + "\"");
      }
    }
  }
}

/// Checks every field's bound and choices.
template <typename C>
void validate_fields(const C& c, const std::string& context) {
  for_each_field(c, [&](const FieldSpec& s, const auto& m, const auto&) { check_field(s, m, context); });
}

/// The JSON object of every field.
template <typename C>
nlohmann::json fields_to_json(const C& c) {
  nlohmann::json j = nlohmann::json::object();
  for_each_field(c, [&](const FieldSpec& s, const auto& m, const auto& codec) { j[s.key] = codec.to(m); });
  return j;
}

/// Reads the fields present in `j` into `c` (absent keys, and null for non-optional fields,
/// keep the value in `c`); unknown keys, wrong types, out-of-range values and invalid
/// choices throw ddpm::Error naming `context` and the key.
template <typename C>
void fields_from_json(const nlohmann::json& j, C& c, const std::string& context) {
  check_keys(j, field_keys<C>(), context);
  for_each_field(c, [&](const FieldSpec& s, auto& m, const auto& codec) {
    using T = std::decay_t<decltype(m)>;
    auto it = j.find(s.key);
    if (it == j.end() || (it->is_null() && !IsOptional<T>::value)) return;
    try {
      codec.from(*it, m);
    } catch (const Error& e) {
      throw Error(context + ": bad value for \"" + s.key + "\": " + truncated_dump(*it) + " (" + error_text(e) + ")");
    } catch (const nlohmann::json::exception& e) {
      throw Error(context + ": bad value for \"" + s.key + "\": " + truncated_dump(*it) + " (" + e.what() + ")");
    }
    check_field(s, m, context);
  });
}

}  // namespace ddpm::detail
