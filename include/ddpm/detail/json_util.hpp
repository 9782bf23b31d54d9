#pragma once
/// JSON file helpers shared by every config loader: reading a file with an
/// error that names it, and rejecting keys a loader does not know.
#include <ddpm/error.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <initializer_list>
#include <string>

namespace ddpm::detail {

/// `j` as compact JSON, cut to at most `max_chars` characters ("..." appended): error messages
/// quote values without dumping whatever a hostile file holds.
inline std::string truncated_dump(const nlohmann::json& j, size_t max_chars = 80) {
  std::string s = j.dump();
  if (s.size() > max_chars) s = s.substr(0, max_chars) + "...";
  return s;
}

/// Parses the JSON file at `path`; throws ddpm::Error naming the file when it
/// cannot be opened or is not valid JSON.
inline nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("cannot open JSON file '" + path + "'");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& e) {
    throw Error("invalid JSON in '" + path + "': " + e.what());
  }
}

/// Writes `j` (pretty-printed) to `path`, through a temporary file and a rename
/// so that a crash never leaves a half-written file.
inline void write_json_file(const std::string& path, const nlohmann::json& j) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) throw Error("cannot write '" + tmp + "'");
    out << j.dump(2) << '\n';
    if (!out) throw Error("cannot write '" + tmp + "'");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    throw Error("cannot rename '" + tmp + "' to '" + path + "'");
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
    out = it->get<T>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(context + ": bad value for \"" + key + "\": " + it->dump() + " (" + e.what() + ")");
  }
}

}  // namespace ddpm::detail
