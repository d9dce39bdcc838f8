// Test-only GGUF writer: builds GGUF images in memory, valid by default and
// easy to corrupt (counts, versions, offsets and alignment can be overridden),
// so reader tests can construct exactly the malformed input they are about.
// Header-only; used by gguf_test.cc and model_info_test.cc.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/quant.h"
#include "runtime/model/gguf.h"

namespace headwise::model::testing {

// A metadata value already encoded as GGUF stores it (without its type tag).
struct EncodedValue {
  GgufValueType type;
  std::vector<uint8_t> bytes;
};

// resize + memcpy rather than vector::insert, which trips GCC 12's
// -Wstringop-overflow false positive at -O2.
inline void AppendBytes(std::vector<uint8_t>& out, const void* p, size_t n) {
  if (n == 0) return;
  const size_t old = out.size();
  out.resize(old + n);
  std::memcpy(out.data() + old, p, n);
}

// Little-endian append (the host is little-endian wherever these tests run).
template <typename T>
void AppendLe(std::vector<uint8_t>& out, T v) {
  AppendBytes(out, &v, sizeof(v));
}

inline void AppendString(std::vector<uint8_t>& out, std::string_view s) {
  AppendLe<uint64_t>(out, s.size());
  AppendBytes(out, s.data(), s.size());
}

template <typename T>
EncodedValue Scalar(GgufValueType type, T v) {
  EncodedValue e{type, {}};
  AppendLe(e.bytes, v);
  return e;
}

inline EncodedValue U8(uint8_t v) { return Scalar(GgufValueType::kUint8, v); }
inline EncodedValue I8(int8_t v) { return Scalar(GgufValueType::kInt8, v); }
inline EncodedValue U16(uint16_t v) { return Scalar(GgufValueType::kUint16, v); }
inline EncodedValue I16(int16_t v) { return Scalar(GgufValueType::kInt16, v); }
inline EncodedValue U32(uint32_t v) { return Scalar(GgufValueType::kUint32, v); }
inline EncodedValue I32(int32_t v) { return Scalar(GgufValueType::kInt32, v); }
inline EncodedValue U64(uint64_t v) { return Scalar(GgufValueType::kUint64, v); }
inline EncodedValue I64(int64_t v) { return Scalar(GgufValueType::kInt64, v); }
inline EncodedValue F32(float v) { return Scalar(GgufValueType::kFloat32, v); }
inline EncodedValue F64(double v) { return Scalar(GgufValueType::kFloat64, v); }
inline EncodedValue Bool(bool v) { return Scalar(GgufValueType::kBool, uint8_t{v}); }
inline EncodedValue Str(std::string_view s) {
  EncodedValue e{GgufValueType::kString, {}};
  AppendString(e.bytes, s);
  return e;
}
// Elements must all be of `element_type`.
inline EncodedValue Array(GgufValueType element_type, const std::vector<EncodedValue>& elements) {
  EncodedValue e{GgufValueType::kArray, {}};
  AppendLe<uint32_t>(e.bytes, static_cast<uint32_t>(element_type));
  AppendLe<uint64_t>(e.bytes, elements.size());
  for (const EncodedValue& v : elements) AppendBytes(e.bytes, v.bytes.data(), v.bytes.size());
  return e;
}
inline EncodedValue StrArray(const std::vector<std::string>& strings) {
  std::vector<EncodedValue> elements;
  for (const std::string& s : strings) elements.push_back(Str(s));
  return Array(GgufValueType::kString, elements);
}

struct TestTensor {
  std::string name;
  std::vector<uint64_t> dims;      // innermost first
  uint32_t type = 0;               // ggml type number (may be invalid on purpose)
  std::vector<uint8_t> data;       // when empty: zeros of the size the type implies
  std::optional<uint64_t> offset;  // when unset: next aligned offset
};

class GgufTestWriter {
 public:
  uint32_t version = 3;
  std::optional<uint64_t> n_tensors_override;
  std::optional<uint64_t> n_kv_override;
  // Alignment used to lay out data; general.alignment is written only via Add.
  uint64_t alignment = 32;

  GgufTestWriter& Add(std::string key, EncodedValue value) {
    kvs_.push_back({std::move(key), std::move(value)});
    return *this;
  }
  // Adds general.alignment (uint32) and lays data out with it.
  GgufTestWriter& SetAlignment(uint32_t a) {
    alignment = a;
    return Add("general.alignment", U32(a));
  }
  // `data` empty: zeros of the size the type implies. `offset` unset: the
  // next aligned offset (a set offset is written as is, with no data).
  GgufTestWriter& AddTensor(std::string name, std::vector<uint64_t> dims, uint32_t type,
                            std::vector<uint8_t> data = {},
                            std::optional<uint64_t> offset = std::nullopt) {
    tensors_.push_back({std::move(name), std::move(dims), type, std::move(data), offset});
    return *this;
  }

  std::vector<uint8_t> Build() const {
    std::vector<uint8_t> out;
    AppendBytes(out, "GGUF", 4);
    AppendLe<uint32_t>(out, version);
    AppendLe<uint64_t>(out, n_tensors_override.value_or(tensors_.size()));
    AppendLe<uint64_t>(out, n_kv_override.value_or(kvs_.size()));
    for (const auto& [key, value] : kvs_) {
      AppendString(out, key);
      AppendLe<uint32_t>(out, static_cast<uint32_t>(value.type));
      AppendBytes(out, value.bytes.data(), value.bytes.size());
    }
    // Lay out tensor data: each at the next aligned offset unless overridden.
    std::vector<std::vector<uint8_t>> datas;
    std::vector<uint64_t> offsets;
    uint64_t next = 0;
    for (const TestTensor& t : tensors_) {
      std::vector<uint8_t> data = t.data;
      if (data.empty()) data.assign(DefaultBytes(t), 0);
      const uint64_t off = t.offset.value_or(next);
      offsets.push_back(off);
      if (!t.offset) next = AlignUp(off + data.size());
      datas.push_back(std::move(data));
    }
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const TestTensor& t = tensors_[i];
      AppendString(out, t.name);
      AppendLe<uint32_t>(out, static_cast<uint32_t>(t.dims.size()));
      for (uint64_t d : t.dims) AppendLe<uint64_t>(out, d);
      AppendLe<uint32_t>(out, t.type);
      AppendLe<uint64_t>(out, offsets[i]);
    }
    if (tensors_.empty()) return out;
    const uint64_t data_start = AlignUp(out.size());
    out.resize(data_start, 0);
    for (size_t i = 0; i < tensors_.size(); ++i) {
      // Deliberately bad offsets carry no data; neither do absurd shapes.
      if (tensors_[i].offset || datas[i].empty()) continue;
      const uint64_t at = data_start + offsets[i];
      if (out.size() < at + datas[i].size()) out.resize(at + datas[i].size(), 0);
      std::memcpy(out.data() + at, datas[i].data(), datas[i].size());
    }
    return out;
  }

 private:
  uint64_t AlignUp(uint64_t v) const { return (v + alignment - 1) / alignment * alignment; }

  static uint64_t DefaultBytes(const TestTensor& t) {
    if (t.dims.empty()) return 0;
    uint64_t rows = 1;
    for (size_t i = 1; i < t.dims.size(); ++i) {
      if (t.dims[i] > (uint64_t{1} << 24)) return 0;
      rows *= t.dims[i];
      if (rows > (uint64_t{1} << 24)) return 0;
    }
    const auto row = kernels::RowBytes(static_cast<kernels::GgmlType>(t.type), t.dims[0]);
    // Absurd shapes (tests of the reader's checks) get no data.
    if (!row || rows > (uint64_t{1} << 24) || *row > (uint64_t{1} << 24)) return 0;
    return rows * *row;
  }

  std::vector<std::pair<std::string, EncodedValue>> kvs_;
  std::vector<TestTensor> tensors_;
};

// Offset of the first occurrence of `needle` in `image` (npos when absent).
inline size_t FindBytes(const std::vector<uint8_t>& image, std::string_view needle) {
  const std::string_view hay(reinterpret_cast<const char*>(image.data()), image.size());
  return hay.find(needle);
}

// Overwrites the 8 bytes at `at` with `v` (little-endian).
inline void PatchU64(std::vector<uint8_t>& image, size_t at, uint64_t v) {
  std::memcpy(image.data() + at, &v, sizeof(v));
}

}  // namespace headwise::model::testing
