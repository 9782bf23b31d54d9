#pragma once
/// Reading and writing the safetensors format (https://github.com/huggingface/safetensors):
///   [u64 little-endian N][N bytes of JSON header, space padded][raw little-endian data]
/// The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} with
/// offsets relative to the end of the header, plus an optional "__metadata__" object of
/// string -> string. Every structural problem raises ddpm::Error naming the file (and the
/// tensor where relevant); nothing is trusted from the file before it is checked.
#include <ddpm/detail/json_util.hpp>
#include <ddpm/error.hpp>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace ddpm {

/// Tensors and metadata of one safetensors file.
struct SafetensorsFile {
  std::map<std::string, torch::Tensor> tensors;   ///< name -> CPU tensor (owns its memory)
  std::map<std::string, std::string> metadata;    ///< the "__metadata__" object (may be empty)
};

namespace detail {

/// One safetensors dtype: its name, torch dtype and element size in bytes.
struct SafetensorsDtype {
  const char* name;
  torch::ScalarType type;
  int64_t size;
};

/// The dtypes ddpm reads and writes.
inline const std::vector<SafetensorsDtype>& safetensors_dtypes() {
  static const std::vector<SafetensorsDtype> table = {
      {"F64", torch::kFloat64, 8},  {"F32", torch::kFloat32, 4}, {"F16", torch::kFloat16, 2},
      {"BF16", torch::kBFloat16, 2}, {"I64", torch::kInt64, 8},  {"I32", torch::kInt32, 4},
      {"I16", torch::kInt16, 2},    {"I8", torch::kInt8, 1},     {"U8", torch::kUInt8, 1},
      {"BOOL", torch::kBool, 1}};
  return table;
}

inline std::string safetensors_dtype_list() {
  std::string out;
  for (const auto& d : safetensors_dtypes()) out += (out.empty() ? "" : ", ") + std::string(d.name);
  return out;
}

inline bool host_is_little_endian() {
  const uint16_t probe = 1;
  unsigned char first = 0;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}

/// Upper bound on the header size (the reference implementation uses 100 MB too).
constexpr uint64_t kMaxSafetensorsHeader = 100ull * 1024 * 1024;

/// One parsed and validated header entry.
struct SafetensorsEntry {
  std::string name;
  SafetensorsDtype dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

/// Parses the JSON header text, rejecting duplicate top-level names (nlohmann would
/// silently keep the last one).
inline nlohmann::json parse_safetensors_header(const std::string& text, const std::string& path) {
  std::set<std::string> seen;
  std::string duplicate;
  auto callback = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    if (depth == 1 && event == nlohmann::json::parse_event_t::key) {
      const std::string key = parsed.get<std::string>();
      if (!seen.insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  const nlohmann::json header =
      detail::parse_json(text, "safetensors file '" + path + "': header is not valid JSON", callback);
  if (!duplicate.empty()) {
    throw Error("safetensors file '" + path + "': duplicate tensor name \"" + duplicate +
                "\" in the header");
  }
  if (!header.is_object()) {
    throw Error("safetensors file '" + path + "': header must be a JSON object, got " +
                std::string(header.type_name()));
  }
  return header;
}

/// Validates one header entry against the data section size.
inline SafetensorsEntry parse_safetensors_entry(const std::string& name, const nlohmann::json& j,
                                                uint64_t data_size, const std::string& path) {
  const std::string where = "safetensors file '" + path + "', tensor \"" + name + "\"";
  if (!j.is_object()) throw Error(where + ": entry must be an object, got " + detail::truncated_dump(j));
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() != "dtype" && it.key() != "shape" && it.key() != "data_offsets") {
      throw Error(where + ": unknown field \"" + it.key() +
                  "\" (expected dtype, shape, data_offsets)");
    }
  }
  SafetensorsEntry e;
  e.name = name;
  auto dt = j.find("dtype");
  if (dt == j.end() || !dt->is_string()) throw Error(where + ": missing or non-string \"dtype\"");
  const std::string dname = dt->get<std::string>();
  bool found = false;
  for (const auto& d : safetensors_dtypes()) {
    if (dname == d.name) {
      e.dtype = d;
      found = true;
    }
  }
  if (!found) {
    throw Error(where + ": unknown dtype \"" + dname + "\" (supported: " +
                safetensors_dtype_list() + ")");
  }
  auto sh = j.find("shape");
  if (sh == j.end() || !sh->is_array()) throw Error(where + ": missing or non-array \"shape\"");
  uint64_t numel = 1;
  bool overflow = false;
  for (const auto& d : *sh) {
    if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0)) {
      throw Error(where + ": bad dimension " + detail::truncated_dump(d) + " in shape " + detail::truncated_dump(*sh));
    }
    const uint64_t v = d.get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) overflow = true;
    if (v != 0 && numel > std::numeric_limits<uint64_t>::max() / v) overflow = true;
    if (!overflow) numel *= v;
    e.shape.push_back(static_cast<int64_t>(v));
  }
  auto off = j.find("data_offsets");
  if (off == j.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
      !(*off)[1].is_number_unsigned()) {
    throw Error(where + ": \"data_offsets\" must be [begin, end] of non-negative integers, got " +
                (off == j.end() ? std::string("nothing") : off->dump()));
  }
  e.begin = (*off)[0].get<uint64_t>();
  e.end = (*off)[1].get<uint64_t>();
  if (e.begin > e.end) {
    throw Error(where + ": data_offsets " + off->dump() + " have begin > end");
  }
  if (e.end > data_size) {
    throw Error(where + ": data_offsets " + off->dump() + " run past the end of the data (" +
                std::to_string(data_size) + " bytes)");
  }
  const uint64_t expect = numel * static_cast<uint64_t>(e.dtype.size);
  if (overflow || numel > std::numeric_limits<uint64_t>::max() / e.dtype.size ||
      expect != e.end - e.begin) {
    throw Error(where + ": holds " + std::to_string(e.end - e.begin) + " bytes but dtype " +
                dname + " x shape " + sh->dump() + " needs " +
                (overflow ? std::string("an overflowing number of") : std::to_string(expect)) +
                " bytes");
  }
  return e;
}

}  // namespace detail

/// Reads a whole safetensors file. Tensors come back on the CPU, contiguous, with the file's
/// dtype. Throws ddpm::Error for a missing, truncated or malformed file (message names the
/// file and the tensor at fault).
inline SafetensorsFile load_safetensors_file(const std::string& path) {
  if (!detail::host_is_little_endian()) {
    throw Error("safetensors: reading '" + path + "' needs a little-endian host");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open safetensors file '" + path + "'");
  in.seekg(0, std::ios::end);
  const std::streamoff file_size_off = in.tellg();
  if (file_size_off < 0) throw Error("cannot determine the size of safetensors file '" + path + "'");
  const uint64_t file_size = static_cast<uint64_t>(file_size_off);
  in.seekg(0, std::ios::beg);
  if (file_size < 8) {
    throw Error("safetensors file '" + path + "' is truncated: " + std::to_string(file_size) +
                " bytes, shorter than the 8-byte header length");
  }
  unsigned char len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  if (!in) throw Error("cannot read safetensors file '" + path + "'");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > file_size - 8) {
    throw Error("safetensors file '" + path + "' is truncated or corrupt: header length " +
                std::to_string(header_len) + " runs past the end of the file (" +
                std::to_string(file_size) + " bytes)");
  }
  if (header_len > detail::kMaxSafetensorsHeader) {
    throw Error("safetensors file '" + path + "': header length " + std::to_string(header_len) +
                " exceeds the 100 MB limit");
  }
  std::string text(static_cast<size_t>(header_len), '\0');
  in.read(text.data(), static_cast<std::streamsize>(header_len));
  if (!in) throw Error("cannot read the header of safetensors file '" + path + "'");
  const nlohmann::json header = detail::parse_safetensors_header(text, path);
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = file_size - data_start;

  SafetensorsFile out;
  std::vector<detail::SafetensorsEntry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) {
        throw Error("safetensors file '" + path + "': __metadata__ must be an object");
      }
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) {
          throw Error("safetensors file '" + path + "': __metadata__ value for \"" + m.key() +
                      "\" must be a string, got " + m->dump());
        }
        out.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    entries.push_back(detail::parse_safetensors_entry(it.key(), *it, data_size, path));
  }
  // Non-overlapping: sorted by begin, each tensor must start at or after the previous end.
  std::vector<const detail::SafetensorsEntry*> sorted;
  for (const auto& e : entries) sorted.push_back(&e);
  std::sort(sorted.begin(), sorted.end(), [](const auto* a, const auto* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  for (size_t i = 1; i < sorted.size(); ++i) {
    const auto* prev = sorted[i - 1];
    const auto* cur = sorted[i];
    if (cur->begin < prev->end) {
      throw Error("safetensors file '" + path + "': tensors \"" + prev->name + "\" [" +
                  std::to_string(prev->begin) + ", " + std::to_string(prev->end) + ") and \"" +
                  cur->name + "\" [" + std::to_string(cur->begin) + ", " +
                  std::to_string(cur->end) + ") overlap");
    }
  }
  for (const auto& e : entries) {
    torch::Tensor t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype.type));
    const uint64_t n = e.end - e.begin;
    if (n > 0) {
      in.seekg(static_cast<std::streamoff>(data_start + e.begin), std::ios::beg);
      in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(n));
      if (!in) {
        throw Error("safetensors file '" + path + "': cannot read the data of tensor \"" +
                    e.name + "\"");
      }
    }
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

/// Reads the tensors of a safetensors file (see load_safetensors_file).
inline std::map<std::string, torch::Tensor> load_safetensors(const std::string& path) {
  return load_safetensors_file(path).tensors;
}

/// Writes `tensors` (made contiguous and moved to the CPU) and `metadata` as a safetensors file,
/// through `path + ".tmp"` and a rename. Tensors are laid out in name order; the header is
/// padded with spaces so that 8 + N is a multiple of 8. Throws ddpm::Error on an unsupported
/// dtype, a reserved name or an I/O failure.
inline void save_safetensors(const std::string& path,
                             const std::map<std::string, torch::Tensor>& tensors,
                             const std::map<std::string, std::string>& metadata = {}) {
  if (!detail::host_is_little_endian()) {
    throw Error("safetensors: writing '" + path + "' needs a little-endian host");
  }
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) {
    nlohmann::json m = nlohmann::json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = m;
  }
  std::vector<torch::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__") {
      throw Error("safetensors file '" + path + "': \"__metadata__\" is reserved, not a tensor name");
    }
    if (!tensor.defined()) {
      throw Error("safetensors file '" + path + "': tensor \"" + name + "\" is undefined");
    }
    const detail::SafetensorsDtype* dtype = nullptr;
    for (const auto& d : detail::safetensors_dtypes()) {
      if (d.type == tensor.scalar_type()) dtype = &d;
    }
    if (dtype == nullptr) {
      throw Error("safetensors file '" + path + "': tensor \"" + name + "\" has dtype " +
                  std::string(c10::toString(tensor.scalar_type())) + ", not one of " +
                  detail::safetensors_dtype_list());
    }
    torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
    const uint64_t n = static_cast<uint64_t>(t.numel()) * static_cast<uint64_t>(dtype->size);
    header[name] = {{"dtype", dtype->name},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + n}}};
    offset += n;
    data.push_back(std::move(t));
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw IoError("cannot write safetensors file '" + tmp + "'");
    uint64_t n = text.size();
    unsigned char len_bytes[8];
    for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);
    out.write(reinterpret_cast<const char*>(len_bytes), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& t : data) {
      const auto bytes = static_cast<std::streamsize>(t.numel() * t.element_size());
      if (bytes > 0) out.write(static_cast<const char*>(t.data_ptr()), bytes);
    }
    out.flush();
    if (!out) throw IoError("cannot write safetensors file '" + tmp + "' (disk full?)");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw IoError("cannot rename '" + tmp + "' to '" + path + "'");
  }
}

}  // namespace ddpm
