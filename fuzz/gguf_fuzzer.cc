// Fuzzes the GGUF reader on arbitrary bytes: header, metadata (nested arrays)
// and tensor directory. After a successful parse it reads everything the API
// exposes (every value, every tensor's first and last data byte, so ASan sees a
// bad data pointer) and runs what is built from a GGUF: ModelInfo, the
// tokenizer, the chat template and tensor dequantization. The invariants the
// reader promises (tensor data inside the file, element counts, look-ups) are
// checked, and a violation aborts as a crash.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/quant.h"
#include "runtime/model/chat_template.h"
#include "runtime/model/gguf.h"
#include "runtime/model/model_info.h"
#include "runtime/model/tokenizer.h"
#include "runtime/model/weights.h"

namespace {

using headwise::model::GgufArray;
using headwise::model::GgufFile;
using headwise::model::GgufValue;
using headwise::model::GgufValueType;
using headwise::model::TensorInfo;

// Dequantizing is linear in the elements; bigger tensors add time, not coverage.
constexpr uint64_t kMaxDequantizeElements = uint64_t{1} << 16;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "gguf_fuzzer: invariant violated: %s\n", what);
    std::abort();
  }
}

// Reads every accessor of a value, recursing into arrays.
size_t TouchValue(const GgufValue& v) {
  size_t sink = headwise::model::GgufValueTypeName(v.type).size();
  if (const std::optional<int64_t> i = v.AsInt()) sink += static_cast<size_t>(*i);
  if (const std::optional<double> d = v.AsFloat()) sink += *d > 0 ? 1 : 0;
  if (const std::string* s = v.AsString()) sink += s->size();
  if (const GgufArray* a = v.AsArray()) {
    sink += headwise::model::GgufValueTypeName(a->element_type).size();
    for (const GgufValue& e : a->values) {
      Check(e.type == a->element_type, "array element type differs from the array's");
      sink += TouchValue(e);
    }
  }
  return sink;
}

size_t TouchFile(const GgufFile& file) {
  size_t sink = file.version() + file.path().size();
  Check(file.version() == 2 || file.version() == 3, "version not 2 or 3");
  Check(file.alignment() > 0 && (file.alignment() & (file.alignment() - 1)) == 0,
        "alignment not a power of two");
  Check(file.tensors().empty() || file.data_offset() <= file.file_size(),
        "data section starts past the end");
  for (const auto& [key, value] : file.metadata()) {
    Check(file.Find(key) == &value, "Find(key) does not return the key's value");
    sink += TouchValue(value);
    if (absl::StatusOr<int64_t> i = file.GetInt(key); i.ok()) sink += static_cast<size_t>(*i);
    if (absl::StatusOr<double> d = file.GetFloat(key); d.ok()) sink += *d > 0 ? 1 : 0;
    if (absl::StatusOr<std::string> s = file.GetString(key); s.ok()) sink += s->size();
    if (absl::StatusOr<const GgufArray*> a = file.GetArray(key); a.ok()) {
      sink += (*a)->values.size();
    }
  }
  Check(!file.GetInt("headwise.fuzz.absent").ok(), "GetInt of an absent key succeeded");
  for (const TensorInfo& t : file.tensors()) {
    Check(file.FindTensor(t.name) == &t, "FindTensor(name) does not return the tensor");
    Check(!t.dims.empty() && t.dims.size() <= 4, "tensor has 0 or more than 4 dims");
    uint64_t elements = 1;
    for (uint64_t d : t.dims) elements *= d;
    Check(elements == t.n_elements, "n_elements is not the product of dims");
    Check(t.data != nullptr, "tensor without data pointer");
    Check(t.offset % file.alignment() == 0, "tensor offset not aligned");
    Check(file.data_offset() + t.offset + t.n_bytes <= file.file_size(),
          "tensor data ends past the end of the file");
    Check(headwise::kernels::TypeTraits(static_cast<uint32_t>(t.type)).has_value(),
          "tensor type has no traits");
    if (t.n_bytes > 0) {
      // Reads through the pointer: out of the buffer, ASan reports it.
      sink += t.data[0] + t.data[t.n_bytes - 1];
    }
    if (t.n_elements <= kMaxDequantizeElements) {
      absl::StatusOr<std::vector<float>> values = headwise::model::DequantizeTensor(t);
      if (values.ok()) Check(values->size() == t.n_elements, "dequantized element count");
    }
  }
  return sink;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<std::unique_ptr<GgufFile>> file = GgufFile::FromBuffer(data, size, "fuzz.gguf");
  if (!file.ok()) {
    Check(!file.status().message().empty(), "error without a message");
    return 0;
  }
  volatile size_t sink = TouchFile(**file);

  if (absl::StatusOr<headwise::model::ModelInfo> info = headwise::model::ReadModelInfo(**file);
      info.ok()) {
    Check(info->n_layers > 0 && info->n_heads > 0 && info->n_kv_heads > 0 && info->head_dim > 0,
          "ModelInfo accepted a non-positive count");
    Check(info->n_heads % info->n_kv_heads == 0, "ModelInfo: kv heads do not divide heads");
    sink = sink + headwise::model::KvBytesPerToken(*info, 2);
  }

  absl::StatusOr<headwise::model::Tokenizer> tokenizer =
      headwise::model::Tokenizer::FromGguf(**file);
  if (tokenizer.ok()) {
    const std::vector<int32_t> ids = tokenizer->Encode("Hello world <|im_start|>", true, true);
    for (int32_t id : ids) Check(id >= 0 && id < tokenizer->vocab_size(), "token id out of range");
    sink = sink + tokenizer->Decode(ids).size();
  }

  if (absl::StatusOr<std::string> tmpl = (*file)->GetString("tokenizer.chat_template"); tmpl.ok()) {
    const std::vector<headwise::model::ChatMessage> msgs = {{"system", "s"}, {"user", "u"}};
    if (absl::StatusOr<std::string> text = headwise::model::ApplyChatTemplate(*tmpl, msgs, true);
        text.ok()) {
      sink = sink + text->size();
    }
  }
  (void)sink;
  return 0;
}
