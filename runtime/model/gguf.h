// GGUF reader: maps a model file read-only and parses its header, metadata and
// tensor directory. Every size and offset is checked against the file size with
// overflow-safe arithmetic, so a malformed or truncated file yields an
// InvalidArgument status naming what is wrong and at which byte offset; it never
// crashes. Metadata arrays may hold 2^24 elements in all, which bounds the
// memory a file can make the reader allocate. Tensor data is not copied:
// TensorInfo::data points into the mapping, valid for the lifetime of the
// GgufFile.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/quant.h"

namespace headwise::model {

// Metadata value types, numbered as in the GGUF specification.
enum class GgufValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

std::string_view GgufValueTypeName(GgufValueType type);

struct GgufValue;

struct GgufArray {
  GgufValueType element_type = GgufValueType::kUint8;
  std::vector<GgufValue> values;
};

// One metadata value. Integers are widened to 64 bits (signedness kept),
// floats to double; `type` records the type stored in the file.
struct GgufValue {
  GgufValueType type = GgufValueType::kUint8;
  std::variant<uint64_t, int64_t, double, bool, std::string, GgufArray> value;

  // Integer value of any integer type (or bool); nullopt for other types or a
  // uint64 that does not fit int64.
  std::optional<int64_t> AsInt() const;
  // Value of any numeric type as double; nullopt otherwise.
  std::optional<double> AsFloat() const;
  // nullptr unless the value is of that type.
  const std::string* AsString() const;
  const GgufArray* AsArray() const;
};

struct TensorInfo {
  std::string name;
  // Dimensions innermost first, as GGUF stores them (ne[0] is the row length).
  std::vector<uint64_t> dims;
  kernels::GgmlType type = kernels::GgmlType::kF32;
  uint64_t offset = 0;            // from the start of the data section
  uint64_t n_elements = 0;        // product of dims
  uint64_t n_bytes = 0;           // bytes of data in the file
  const uint8_t* data = nullptr;  // into the mapping
};

class GgufFile {
 public:
  // Maps and parses `path`. Errors: NotFound / PermissionDenied when the file
  // cannot be opened; InvalidArgument with the byte offset for malformed content.
  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path);
  // Parses an in-memory image (not copied; must outlive the GgufFile). Used by
  // tests and fuzzers.
  static absl::StatusOr<std::unique_ptr<GgufFile>> FromBuffer(const uint8_t* data, size_t size,
                                                              std::string name = "<buffer>");

  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_size() const { return size_; }

  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }

  // nullptr when absent.
  const GgufValue* Find(std::string_view key) const;
  const TensorInfo* FindTensor(std::string_view name) const;

  // Typed look-ups: NotFound when absent, InvalidArgument (naming the key and
  // the stored type) when present with an incompatible type.
  absl::StatusOr<int64_t> GetInt(std::string_view key) const;
  absl::StatusOr<double> GetFloat(std::string_view key) const;
  absl::StatusOr<std::string> GetString(std::string_view key) const;
  absl::StatusOr<const GgufArray*> GetArray(std::string_view key) const;

 private:
  GgufFile() = default;
  absl::Status Parse();

  std::string path_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  void* mapping_ = nullptr;  // non-null when we own an mmap of size_ bytes
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::map<std::string, GgufValue> metadata_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

}  // namespace headwise::model
