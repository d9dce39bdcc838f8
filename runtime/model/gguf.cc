// GGUF parsing (runtime/model/gguf.h). A bounds-checked cursor reads the
// little-endian header, metadata and tensor directory; every count is checked
// against the bytes left before anything is allocated for it, so a hostile
// count fails at once instead of exhausting memory. Errors carry the file name
// and the byte offset where the bad field starts.
#include "runtime/model/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "spdlog/spdlog.h"

namespace headwise::model {
namespace {

// This absl may predate std::string_view interop: convert explicitly.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

constexpr uint32_t kMaxDims = 4;
// Arrays nest at most this deep; deeper nesting is malformed, not a reason to
// recurse until the stack runs out.
constexpr int kMaxArrayDepth = 8;
// Array elements all metadata may hold. In memory each is a GgufValue (48
// bytes), up to 48 times its size in the file (a uint8), so checking counts
// against the bytes left is not enough: a 64 MiB file with one uint8 array
// took 3.2 GB. Real files hold about 1M (a 256k vocabulary's tokens, scores
// and types, and merges); 16M is at most ~800 MB.
constexpr uint64_t kMaxArrayElements = uint64_t{1} << 24;

// Smallest encoding of a value of `type` (an empty string or array counts its
// length field), used to reject counts that cannot fit in the bytes left.
uint64_t MinEncodedSize(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kUint16:
    case GgufValueType::kInt16:
      return 2;
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kFloat32:
      return 4;
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
    case GgufValueType::kFloat64:
    case GgufValueType::kString:
      return 8;
    case GgufValueType::kArray:
      return 4 + 8;
  }
  return 1;
}

bool KnownValueType(uint32_t t) { return t <= static_cast<uint32_t>(GgufValueType::kFloat64); }

// Reads little-endian fields from [base, base + size) and reports where a
// read fails.
class Cursor {
 public:
  Cursor(const uint8_t* base, uint64_t size, const std::string& name)
      : base_(base), size_(size), name_(name) {}

  // Array elements the metadata may still hold (kMaxArrayElements in all).
  uint64_t array_elements_left = kMaxArrayElements;

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  absl::Status Error(uint64_t at, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(name_, ": at byte ", at, ": ", what));
  }

  // The next T, or nullopt (position unchanged) when fewer bytes are left.
  template <typename T>
  std::optional<T> Read() {
    if (remaining() < sizeof(T)) return std::nullopt;
    std::array<uint8_t, sizeof(T)> bytes;
    std::memcpy(bytes.data(), base_ + pos_, sizeof(T));
    if constexpr (std::endian::native == std::endian::big) {
      for (size_t i = 0; i < sizeof(T) / 2; ++i) std::swap(bytes[i], bytes[sizeof(T) - 1 - i]);
    }
    pos_ += sizeof(T);
    return std::bit_cast<T>(bytes);
  }

  // The error for a `need`-byte field that does not fit in what is left.
  absl::Status Truncated(uint64_t need, absl::string_view what) const {
    return Error(pos_, absl::StrCat("file ends while reading ", what, " (needs ", need, " bytes, ",
                                    remaining(), " left; file is ", size_, " bytes)"));
  }

  // Reads a length-prefixed string; `what` names it in errors (called only
  // on failure, so the common path builds no message).
  template <typename What>
  absl::Status ReadString(std::string& out, What what) {
    const uint64_t at = pos_;
    const std::optional<uint64_t> len = Read<uint64_t>();
    if (!len) return Truncated(8, absl::StrCat("the length of ", what()));
    if (*len > remaining()) {
      return Error(at, absl::StrCat(what(), " has length ", *len, " but only ", remaining(),
                                    " bytes are left (file is ", size_, " bytes)"));
    }
    out.assign(reinterpret_cast<const char*>(base_ + pos_), *len);
    pos_ += *len;
    return absl::OkStatus();
  }

 private:
  const uint8_t* base_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& name_;
};

template <typename T, typename Wide>
absl::Status ReadScalar(Cursor& c, const std::string& key, GgufValue& out) {
  const std::optional<T> v = c.Read<T>();
  if (!v) return c.Truncated(sizeof(T), absl::StrCat("the value of '", key, "'"));
  out.value = static_cast<Wide>(*v);
  return absl::OkStatus();
}

// Reads one value of `type` (already read) into `out`.
absl::Status ReadValue(Cursor& c, GgufValueType type, const std::string& key, int depth,
                       GgufValue& out) {
  out.type = type;
  switch (type) {
    case GgufValueType::kUint8:
      return ReadScalar<uint8_t, uint64_t>(c, key, out);
    case GgufValueType::kInt8:
      return ReadScalar<int8_t, int64_t>(c, key, out);
    case GgufValueType::kUint16:
      return ReadScalar<uint16_t, uint64_t>(c, key, out);
    case GgufValueType::kInt16:
      return ReadScalar<int16_t, int64_t>(c, key, out);
    case GgufValueType::kUint32:
      return ReadScalar<uint32_t, uint64_t>(c, key, out);
    case GgufValueType::kInt32:
      return ReadScalar<int32_t, int64_t>(c, key, out);
    case GgufValueType::kUint64:
      return ReadScalar<uint64_t, uint64_t>(c, key, out);
    case GgufValueType::kInt64:
      return ReadScalar<int64_t, int64_t>(c, key, out);
    case GgufValueType::kFloat32:
      return ReadScalar<float, double>(c, key, out);
    case GgufValueType::kFloat64:
      return ReadScalar<double, double>(c, key, out);
    case GgufValueType::kBool: {
      const uint64_t at = c.pos();
      const std::optional<uint8_t> v = c.Read<uint8_t>();
      if (!v) return c.Truncated(1, absl::StrCat("the value of '", key, "'"));
      if (*v > 1) {
        return c.Error(at, absl::StrCat("bool '", key, "' is ", int{*v}, ", not 0 or 1"));
      }
      out.value = *v != 0;
      return absl::OkStatus();
    }
    case GgufValueType::kString: {
      std::string s;
      if (absl::Status st = c.ReadString(s, [&] { return absl::StrCat("string '", key, "'"); });
          !st.ok()) {
        return st;
      }
      out.value = std::move(s);
      return absl::OkStatus();
    }
    case GgufValueType::kArray: {
      if (depth >= kMaxArrayDepth) {
        return c.Error(c.pos(), absl::StrCat("'", key, "' nests arrays deeper than ",
                                             kMaxArrayDepth, " levels"));
      }
      const uint64_t type_at = c.pos();
      const std::optional<uint32_t> elem = c.Read<uint32_t>();
      if (!elem) return c.Truncated(4, absl::StrCat("the element type of array '", key, "'"));
      if (!KnownValueType(*elem)) {
        return c.Error(type_at, absl::StrCat("array '", key, "' has unknown element type ", *elem));
      }
      const auto elem_type = static_cast<GgufValueType>(*elem);
      const uint64_t count_at = c.pos();
      const std::optional<uint64_t> count = c.Read<uint64_t>();
      if (!count) return c.Truncated(8, absl::StrCat("the length of array '", key, "'"));
      if (*count > c.remaining() / MinEncodedSize(elem_type)) {
        return c.Error(count_at,
                       absl::StrCat("array '", key, "' has ", *count, " elements of type ",
                                    Sv(GgufValueTypeName(elem_type)), " but only ", c.remaining(),
                                    " bytes are left"));
      }
      if (*count > c.array_elements_left) {
        return c.Error(count_at,
                       absl::StrCat("array '", key, "' has ", *count, " elements, more than the ",
                                    c.array_elements_left, " left of the ", kMaxArrayElements,
                                    " that all metadata arrays may hold together"));
      }
      c.array_elements_left -= *count;
      GgufArray array;
      array.element_type = elem_type;
      array.values.resize(*count);
      for (GgufValue& v : array.values) {
        if (absl::Status s = ReadValue(c, elem_type, key, depth + 1, v); !s.ok()) return s;
      }
      out.value = std::move(array);
      return absl::OkStatus();
    }
  }
  return c.Error(c.pos(), absl::StrCat("unknown value type ", static_cast<uint32_t>(type)));
}

// a + b, or nullopt on overflow.
std::optional<uint64_t> Add(uint64_t a, uint64_t b) {
  if (a > std::numeric_limits<uint64_t>::max() - b) return std::nullopt;
  return a + b;
}

std::optional<uint64_t> AlignUp(uint64_t v, uint64_t alignment) {
  auto sum = Add(v, alignment - 1);
  if (!sum) return std::nullopt;
  return *sum / alignment * alignment;
}

}  // namespace

std::string_view GgufValueTypeName(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8:
      return "uint8";
    case GgufValueType::kInt8:
      return "int8";
    case GgufValueType::kUint16:
      return "uint16";
    case GgufValueType::kInt16:
      return "int16";
    case GgufValueType::kUint32:
      return "uint32";
    case GgufValueType::kInt32:
      return "int32";
    case GgufValueType::kFloat32:
      return "float32";
    case GgufValueType::kBool:
      return "bool";
    case GgufValueType::kString:
      return "string";
    case GgufValueType::kArray:
      return "array";
    case GgufValueType::kUint64:
      return "uint64";
    case GgufValueType::kInt64:
      return "int64";
    case GgufValueType::kFloat64:
      return "float64";
  }
  return "unknown";
}

std::optional<int64_t> GgufValue::AsInt() const {
  if (const auto* u = std::get_if<uint64_t>(&value)) {
    if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(*u);
  }
  if (const auto* i = std::get_if<int64_t>(&value)) return *i;
  if (const auto* b = std::get_if<bool>(&value)) return *b ? 1 : 0;
  return std::nullopt;
}

std::optional<double> GgufValue::AsFloat() const {
  if (const auto* u = std::get_if<uint64_t>(&value)) return static_cast<double>(*u);
  if (const auto* i = std::get_if<int64_t>(&value)) return static_cast<double>(*i);
  if (const auto* d = std::get_if<double>(&value)) return *d;
  return std::nullopt;
}

const std::string* GgufValue::AsString() const { return std::get_if<std::string>(&value); }

const GgufArray* GgufValue::AsArray() const { return std::get_if<GgufArray>(&value); }

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    const std::string msg = absl::StrCat(path, ": cannot open: ", std::strerror(err));
    if (err == ENOENT) return absl::NotFoundError(msg);
    if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(msg);
    return absl::UnavailableError(msg);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::UnavailableError(absl::StrCat(path, ": cannot stat: ", std::strerror(err)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  auto file = std::unique_ptr<GgufFile>(new GgufFile());
  file->path_ = path;
  file->size_ = static_cast<uint64_t>(st.st_size);
  if (file->size_ > 0) {
    void* m = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return absl::ResourceExhaustedError(
          absl::StrCat(path, ": cannot map ", file->size_, " bytes: ", std::strerror(err)));
    }
    file->mapping_ = m;
    file->base_ = static_cast<const uint8_t*>(m);
  }
  ::close(fd);  // the mapping keeps the file alive
  if (absl::Status s = file->Parse(); !s.ok()) return s;
  return file;
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::FromBuffer(const uint8_t* data, size_t size,
                                                               std::string name) {
  auto file = std::unique_ptr<GgufFile>(new GgufFile());
  file->path_ = std::move(name);
  file->base_ = data;
  file->size_ = size;
  if (absl::Status s = file->Parse(); !s.ok()) return s;
  return file;
}

GgufFile::~GgufFile() {
  if (mapping_ != nullptr && ::munmap(mapping_, size_) != 0) {
    spdlog::warn("{}: munmap failed: {}", path_, std::strerror(errno));
  }
}

absl::Status GgufFile::Parse() {
  Cursor c(base_, size_, path_);

  // Header: magic, version, tensor count, metadata count.
  if (size_ < 4 || std::memcmp(base_, "GGUF", 4) != 0) {
    std::string got;
    for (uint64_t i = 0; i < std::min<uint64_t>(size_, 4); ++i) {
      const uint8_t ch = base_[i];
      absl::StrAppend(&got, (ch >= 0x20 && ch < 0x7f && ch != '"')
                                ? std::string(1, static_cast<char>(ch))
                                : absl::StrFormat("\\x%02x", ch));
    }
    return absl::InvalidArgumentError(absl::StrCat(path_, ": not a GGUF file (magic is \"", got,
                                                   "\", expected \"GGUF\"; file is ", size_,
                                                   " bytes)"));
  }
  (void)c.Read<uint32_t>();
  const uint64_t version_at = c.pos();
  const std::optional<uint32_t> version = c.Read<uint32_t>();
  if (!version) return c.Truncated(4, "the GGUF version");
  if (*version == 1) {
    return c.Error(version_at, "GGUF version 1 is not supported (only versions 2 and 3)");
  }
  if (*version != 2 && *version != 3) {
    const bool swapped = *version == 0x02000000u || *version == 0x03000000u;
    return c.Error(version_at,
                   absl::StrCat("unsupported GGUF version ", *version, " (supported: 2 and 3",
                                swapped ? "; this looks like a big-endian file" : "", ")"));
  }
  version_ = *version;

  const uint64_t n_tensors_at = c.pos();
  const std::optional<uint64_t> n_tensors = c.Read<uint64_t>();
  if (!n_tensors) return c.Truncated(8, "the tensor count");
  const uint64_t n_kv_at = c.pos();
  const std::optional<uint64_t> n_kv = c.Read<uint64_t>();
  if (!n_kv) return c.Truncated(8, "the metadata count");
  // A key/value needs at least a key length, a type and a 1-byte value; a
  // tensor a name length, n_dims, one dimension, a type and an offset.
  constexpr uint64_t kMinKvBytes = 8 + 4 + 1;
  constexpr uint64_t kMinTensorBytes = 8 + 4 + 8 + 4 + 8;
  if (*n_kv > c.remaining() / kMinKvBytes) {
    return c.Error(n_kv_at,
                   absl::StrCat("n_kv = ", *n_kv, " is impossible for a ", size_, "-byte file"));
  }
  if (*n_tensors > (c.remaining() - *n_kv * kMinKvBytes) / kMinTensorBytes) {
    return c.Error(n_tensors_at, absl::StrCat("n_tensors = ", *n_tensors, " is impossible for a ",
                                              size_, "-byte file"));
  }

  // Metadata.
  for (uint64_t i = 0; i < *n_kv; ++i) {
    const uint64_t key_at = c.pos();
    std::string key;
    if (absl::Status s = c.ReadString(key, [i] { return absl::StrCat("metadata key #", i); });
        !s.ok()) {
      return s;
    }
    if (metadata_.contains(key)) {
      return c.Error(key_at, absl::StrCat("duplicate metadata key '", key, "'"));
    }
    const uint64_t type_at = c.pos();
    const std::optional<uint32_t> type = c.Read<uint32_t>();
    if (!type) return c.Truncated(4, absl::StrCat("the value type of '", key, "'"));
    if (!KnownValueType(*type)) {
      return c.Error(type_at, absl::StrCat("metadata '", key, "' has unknown value type ", *type));
    }
    GgufValue value;
    if (absl::Status s = ReadValue(c, static_cast<GgufValueType>(*type), key, 0, value); !s.ok()) {
      return s;
    }
    metadata_.emplace(std::move(key), std::move(value));
  }

  if (const GgufValue* a = Find("general.alignment"); a != nullptr) {
    const std::optional<int64_t> v = a->AsInt();
    if (!v || a->type == GgufValueType::kBool || *v <= 0 ||
        !std::has_single_bit(static_cast<uint64_t>(*v))) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": general.alignment must be a non-zero power of two, got ",
                       v ? absl::StrCat(*v) : std::string(Sv(GgufValueTypeName(a->type)))));
    }
    alignment_ = static_cast<uint64_t>(*v);
  }

  // Tensor directory.
  tensors_.reserve(*n_tensors);
  for (uint64_t i = 0; i < *n_tensors; ++i) {
    TensorInfo t;
    const uint64_t name_at = c.pos();
    if (absl::Status s =
            c.ReadString(t.name, [i] { return absl::StrCat("the name of tensor #", i); });
        !s.ok()) {
      return s;
    }
    if (tensor_index_.contains(t.name)) {
      return c.Error(name_at, absl::StrCat("duplicate tensor name '", t.name, "'"));
    }
    const std::string quoted = absl::StrCat("tensor '", t.name, "'");
    const uint64_t n_dims_at = c.pos();
    const std::optional<uint32_t> n_dims = c.Read<uint32_t>();
    if (!n_dims) return c.Truncated(4, absl::StrCat("n_dims of ", quoted));
    if (*n_dims == 0 || *n_dims > kMaxDims) {
      return c.Error(n_dims_at, absl::StrCat(quoted, " has ", *n_dims, " dimensions (must be 1 to ",
                                             kMaxDims, ")"));
    }
    t.n_elements = 1;
    for (uint32_t d = 0; d < *n_dims; ++d) {
      const uint64_t dim_at = c.pos();
      const std::optional<uint64_t> dim = c.Read<uint64_t>();
      if (!dim) return c.Truncated(8, absl::StrCat("dimension ", d, " of ", quoted));
      if (*dim == 0 || *dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return c.Error(dim_at, absl::StrCat(quoted, " has dimension ", d, " = ", *dim));
      }
      if (t.n_elements > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / *dim) {
        return c.Error(dim_at, absl::StrCat(quoted, ": element count overflows at dimension ", d,
                                            " = ", *dim));
      }
      t.n_elements *= *dim;
      t.dims.push_back(*dim);
    }
    const uint64_t type_at = c.pos();
    const std::optional<uint32_t> type = c.Read<uint32_t>();
    if (!type) return c.Truncated(4, absl::StrCat("the type of ", quoted));
    const std::optional<kernels::GgmlTypeTraits> traits = kernels::TypeTraits(*type);
    if (!traits) {
      return c.Error(type_at, absl::StrCat(quoted, " has unknown tensor type ", *type));
    }
    t.type = static_cast<kernels::GgmlType>(*type);
    const std::optional<uint64_t> row_bytes = kernels::RowBytes(t.type, t.dims[0]);
    if (!row_bytes && t.dims[0] % traits->block_size == 0) {  // whole blocks: too many bytes
      return c.Error(type_at, absl::StrCat(quoted, ": the byte size of a row of ", t.dims[0], " ",
                                           Sv(traits->name), " elements overflows"));
    }
    if (!row_bytes) {
      return c.Error(type_at,
                     absl::StrCat(quoted, " has row length ", t.dims[0], ", not a multiple of the ",
                                  Sv(traits->name), " block size ", traits->block_size));
    }
    const uint64_t rows = t.n_elements / t.dims[0];
    if (*row_bytes != 0 && rows > std::numeric_limits<uint64_t>::max() / *row_bytes) {
      return c.Error(type_at, absl::StrCat(quoted, ": byte size overflows"));
    }
    t.n_bytes = rows * *row_bytes;
    const uint64_t offset_at = c.pos();
    const std::optional<uint64_t> offset = c.Read<uint64_t>();
    if (!offset) return c.Truncated(8, absl::StrCat("the data offset of ", quoted));
    if (*offset % alignment_ != 0) {
      return c.Error(offset_at, absl::StrCat(quoted, " data offset ", *offset,
                                             " is not a multiple of the alignment ", alignment_));
    }
    t.offset = *offset;
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }

  // Data section: starts at the next multiple of the alignment.
  const std::optional<uint64_t> data_offset = AlignUp(c.pos(), alignment_);
  if (!data_offset || (*n_tensors > 0 && *data_offset > size_)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": the data section (the ", c.pos(), "-byte header padded to ",
                     alignment_, ") starts past end of file (file is ", size_, " bytes)"));
  }
  data_offset_ = *data_offset;
  for (TensorInfo& t : tensors_) {
    const std::optional<uint64_t> begin = Add(data_offset_, t.offset);
    const std::optional<uint64_t> end = begin ? Add(*begin, t.n_bytes) : std::nullopt;
    if (!end || *end > size_) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": tensor '", t.name, "' data [offset ", t.offset, ", ", t.n_bytes,
                       " bytes] ends past end of file (file is ", size_, " bytes)"));
    }
    t.data = base_ + *begin;
  }
  return absl::OkStatus();
}

const GgufValue* GgufFile::Find(std::string_view key) const {
  auto it = metadata_.find(std::string(key));
  return it == metadata_.end() ? nullptr : &it->second;
}

const TensorInfo* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {

absl::Status WrongType(const std::string& path, std::string_view key, const GgufValue& v,
                       std::string_view wanted) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": metadata '", Sv(key), "' is ",
                                                 Sv(GgufValueTypeName(v.type)), ", expected ",
                                                 Sv(wanted)));
}

absl::Status Missing(const std::string& path, std::string_view key) {
  return absl::NotFoundError(absl::StrCat(path, ": metadata key '", Sv(key), "' not found"));
}

}  // namespace

absl::StatusOr<int64_t> GgufFile::GetInt(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return Missing(path_, key);
  const std::optional<int64_t> i = v->AsInt();
  if (!i) {
    if (v->type == GgufValueType::kUint64 && std::holds_alternative<uint64_t>(v->value)) {
      return absl::InvalidArgumentError(absl::StrCat(path_, ": metadata '", Sv(key),
                                                     "' = ", std::get<uint64_t>(v->value),
                                                     " does not fit int64"));
    }
    return WrongType(path_, key, *v, "an integer");
  }
  return *i;
}

absl::StatusOr<double> GgufFile::GetFloat(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return Missing(path_, key);
  const std::optional<double> d = v->AsFloat();
  if (!d) return WrongType(path_, key, *v, "a number");
  return *d;
}

absl::StatusOr<std::string> GgufFile::GetString(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return Missing(path_, key);
  const std::string* s = v->AsString();
  if (s == nullptr) return WrongType(path_, key, *v, "a string");
  return *s;
}

absl::StatusOr<const GgufArray*> GgufFile::GetArray(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return Missing(path_, key);
  const GgufArray* a = v->AsArray();
  if (a == nullptr) return WrongType(path_, key, *v, "an array");
  return a;
}

}  // namespace headwise::model
