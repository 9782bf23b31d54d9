#pragma once
/// JSON file helpers shared by every config loader: parsing with bounded nesting and errors
/// that name the file, integers read without truncation or wrap-around, values quoted in
/// messages without dumping whatever a hostile file holds, and rejecting keys a loader does
/// not know.
#include <ddpm/error.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>

namespace ddpm::detail {

/// The message of a ddpm::Error without its "ddpm: " prefix (to wrap it in another one).
inline std::string error_text(const std::exception& e) {
  std::string s = e.what();
  if (s.rfind("ddpm: ", 0) == 0) s.erase(0, 6);
  return s;
}

/// `j` as compact JSON, cut to at most `max_chars` characters ("..." appended): error messages
/// quote values without dumping whatever a hostile file holds.
inline std::string truncated_dump(const nlohmann::json& j, size_t max_chars = 80) {
  std::string s = j.dump();
  if (s.size() > max_chars) s = s.substr(0, max_chars) + "...";
  return s;
}

/// Deepest nesting of arrays and objects any JSON input may have (configs nest 3 levels; a
/// deeper file is hostile or broken, and recursive code such as dump() would overflow the stack).
constexpr int kMaxJsonDepth = 64;
/// Largest JSON file (config, scheduler_config.json) read_json_file accepts.
constexpr std::uintmax_t kMaxJsonFileBytes = 16u << 20;

/// Parses `text`; throws ddpm::Error starting with `context` (e.g. "invalid JSON in 'f.json'")
/// for a syntax error, a number out of range ("1e400") or nesting deeper than kMaxJsonDepth.
/// `callback` (optional) sees every parse event as nlohmann's parser_callback_t.
inline nlohmann::json parse_json(const std::string& text, const std::string& context,
                                 const nlohmann::json::parser_callback_t& callback = nullptr) {
  int depth = 0;
  auto bounded = [&](int d, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (event == E::object_start || event == E::array_start) {
      if (++depth > kMaxJsonDepth) {
        throw Error(context + ": arrays/objects nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
      }
    } else if (event == E::object_end || event == E::array_end) {
      --depth;
    }
    return callback ? callback(d, event, parsed) : true;
  };
  try {
    return nlohmann::json::parse(text, bounded);
  } catch (const nlohmann::json::exception& e) {
    throw Error(context + ": " + e.what());
  }
}

/// Parses the JSON file at `path`; throws ddpm::Error naming the file when it cannot be opened,
/// is larger than kMaxJsonFileBytes or is not valid JSON (see parse_json).
inline nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open JSON file '" + path + "'");
  std::string text;
  char buf[65536];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    text.append(buf, static_cast<size_t>(in.gcount()));
    if (text.size() > kMaxJsonFileBytes) {
      throw Error("JSON file '" + path + "' is larger than " + std::to_string(kMaxJsonFileBytes >> 20) +
                  " MiB: not a config");
    }
  }
  if (in.bad()) throw Error("cannot read JSON file '" + path + "'");
  return parse_json(text, "invalid JSON in '" + path + "'");
}

/// `j` read as the integer type T: an integer JSON number within T's range, or a floating-point
/// number with an integral value within it ("steps": 2.7, 1e300 and 2^64 are errors, never
/// truncated, saturated or wrapped). Throws ddpm::Error "must be an integer ..." otherwise.
template <typename T>
T json_integer(const nlohmann::json& j) {
  static_assert(std::is_integral_v<T> && !std::is_same_v<T, bool>, "json_integer: an integer type");
  using L = std::numeric_limits<T>;
  auto range = [] {
    std::ostringstream os;
    os << "an integer in [" << +L::min() << ", " << +L::max() << "]";
    return os.str();
  };
  if (j.is_number_unsigned()) {
    const auto u = j.get<uint64_t>();
    if (u > static_cast<uint64_t>(L::max())) throw Error("must be " + range() + ", got " + j.dump());
    return static_cast<T>(u);
  }
  if (j.is_number_integer()) {
    const auto v = j.get<int64_t>();
    if ((v < 0 && (!std::is_signed_v<T> || v < static_cast<int64_t>(L::min()))) ||
        (v > 0 && static_cast<uint64_t>(v) > static_cast<uint64_t>(L::max()))) {
      throw Error("must be " + range() + ", got " + j.dump());
    }
    return static_cast<T>(v);
  }
  if (j.is_number_float()) {
    const double d = j.get<double>();
    // 2^63 / 2^64 are exact doubles; every integral double below the type's max + 1 converts exactly.
    const double hi = std::ldexp(1.0, std::numeric_limits<T>::digits);
    if (std::isfinite(d) && d == std::floor(d) && d >= static_cast<double>(L::min()) && d < hi) {
      return static_cast<T>(d);
    }
    std::ostringstream os;
    os << d;
    throw Error("must be " + range() + ", got " + os.str());
  }
  std::string shown = j.dump();
  if (shown.size() > 80) shown = shown.substr(0, 80) + "...";
  throw Error("must be " + range() + ", got " + shown);
}

/// Writes `j` (pretty-printed) to `path`, through a temporary file and a rename
/// so that a crash never leaves a half-written file.
inline void write_json_file(const std::string& path, const nlohmann::json& j) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) throw IoError("cannot write '" + tmp + "'");
    out << j.dump(2) << '\n';
    if (!out) throw IoError("cannot write '" + tmp + "'");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    throw IoError("cannot rename '" + tmp + "' to '" + path + "'");
  }
}

/// Throws ddpm::Error if `j` holds a key not in `known` (keys starting with '_',
/// such as diffusers' "_class_name", are always allowed). `context` names the
/// object in the message, e.g. "UNet config 'dir/config.json'".
inline void check_known_keys(const nlohmann::json& j, std::initializer_list<const char*> known,
                             const std::string& context) {
  if (!j.is_object()) throw Error(context + " must be a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    if (!key.empty() && key[0] == '_') continue;
    const bool ok = std::any_of(known.begin(), known.end(),
                                [&](const char* k) { return key == k; });
    if (!ok) {
      std::string list;
      for (const char* k : known) list += (list.empty() ? "" : ", ") + std::string(k);
      throw Error(context + ": unknown key \"" + key + "\" (known keys: " + list + ")");
    }
  }
}

/// Reads j[key] into `out` if present; wraps type errors in a ddpm::Error that
/// names the key and the context.
template <typename T>
void get_optional(const nlohmann::json& j, const char* key, T& out, const std::string& context) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return;
  try {
    if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
      out = json_integer<T>(*it);
    } else {
      out = it->get<T>();
    }
  } catch (const Error& e) {
    throw Error(context + ": bad value for \"" + key + "\": " + truncated_dump(*it) + " (" + error_text(e) + ")");
  } catch (const nlohmann::json::exception& e) {
    throw Error(context + ": bad value for \"" + key + "\": " + truncated_dump(*it) + " (" + e.what() + ")");
  }
}

}  // namespace ddpm::detail
