// Weight loading: every tensor is looked up by its GGUF name, its shape
// checked against the hyper-parameters, then dequantized row by row.
#include "runtime/model/weights.h"

#include <initializer_list>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/quant.h"

namespace headwise::model {
namespace {

std::string ShapeString(const std::vector<uint64_t>& dims) {
  return absl::StrCat("[", absl::StrJoin(dims, ", "), "]");
}

absl::StatusOr<const TensorInfo*> Find(const GgufFile& file, const std::string& name,
                                       std::initializer_list<uint64_t> shape) {
  const TensorInfo* tensor = file.FindTensor(name);
  if (tensor == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(file.path(), ": required tensor '", name, "' is missing"));
  }
  std::vector<uint64_t> want(shape);
  if (tensor->dims != want) {
    return absl::InvalidArgumentError(absl::StrCat(file.path(), ": tensor '", name, "' has shape ",
                                                   ShapeString(tensor->dims), ", expected ",
                                                   ShapeString(want)));
  }
  return tensor;
}

absl::Status LoadVector(const GgufFile& file, const std::string& name, uint64_t n,
                        std::vector<float>& out) {
  absl::StatusOr<const TensorInfo*> tensor = Find(file, name, {n});
  if (!tensor.ok()) return tensor.status();
  absl::StatusOr<std::vector<float>> data = DequantizeTensor(**tensor);
  if (!data.ok()) return data.status();
  out = std::move(*data);
  return absl::OkStatus();
}

absl::Status LoadMatrix(const GgufFile& file, const std::string& name, uint64_t in, uint64_t out,
                        Matrix& matrix) {
  absl::StatusOr<const TensorInfo*> tensor = Find(file, name, {in, out});
  if (!tensor.ok()) return tensor.status();
  absl::StatusOr<std::vector<float>> data = DequantizeTensor(**tensor);
  if (!data.ok()) return data.status();
  matrix.rows = static_cast<int64_t>(out);
  matrix.cols = static_cast<int64_t>(in);
  matrix.data = std::move(*data);
  return absl::OkStatus();
}

#define HEADWISE_RETURN_IF_ERROR(expr) \
  do {                                 \
    absl::Status status_ = (expr);     \
    if (!status_.ok()) return status_; \
  } while (0)

}  // namespace

absl::StatusOr<std::vector<float>> DequantizeTensor(const TensorInfo& tensor) {
  auto traits = kernels::TypeTraits(static_cast<uint32_t>(tensor.type));
  if (!traits || !traits->can_dequantize) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", tensor.name, "' has type ", traits ? std::string(traits->name) : "unknown",
        " (", static_cast<uint32_t>(tensor.type), "), which headwise cannot dequantize"));
  }
  if (tensor.dims.empty())
    return absl::InvalidArgumentError("tensor '" + tensor.name + "' has no dims");
  const int64_t row = static_cast<int64_t>(tensor.dims[0]);
  const int64_t rows = static_cast<int64_t>(tensor.n_elements / tensor.dims[0]);
  std::optional<uint64_t> row_bytes = kernels::RowBytes(tensor.type, row);
  if (!row_bytes || *row_bytes * rows != tensor.n_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", tensor.name, "': row of ", row,
                                                   " elements does not fit type ",
                                                   std::string(traits->name)));
  }
  std::vector<float> out(tensor.n_elements);
  for (int64_t r = 0; r < rows; ++r) {
    kernels::DequantizeRow(tensor.type, tensor.data + r * *row_bytes, out.data() + r * row, row);
  }
  return out;
}

absl::StatusOr<std::unique_ptr<ModelWeights>> LoadWeights(const GgufFile& file,
                                                          const ModelInfo& info) {
  if (info.architecture != "llama" && info.architecture != "qwen2") {
    return absl::InvalidArgumentError(absl::StrCat(file.path(), ": architecture '",
                                                   info.architecture,
                                                   "' is not supported (supported: llama, qwen2)"));
  }
  const uint64_t n_embd = info.n_embd, n_ff = info.n_ff, vocab = info.vocab_size;
  const uint64_t q_dim = uint64_t(info.n_heads) * info.head_dim;
  const uint64_t kv_dim = uint64_t(info.n_kv_heads) * info.head_dim;
  const bool qkv_bias = info.architecture == "qwen2";

  if (const TensorInfo* embd = file.FindTensor("token_embd.weight");
      embd != nullptr && embd->dims.size() == 2 && embd->dims[0] == n_embd &&
      embd->dims[1] != vocab) {
    return absl::InvalidArgumentError(absl::StrCat(file.path(), ": the vocabulary has ", vocab,
                                                   " tokens but token_embd.weight has ",
                                                   embd->dims[1], " rows"));
  }
  auto weights = std::make_unique<ModelWeights>();
  HEADWISE_RETURN_IF_ERROR(
      LoadMatrix(file, "token_embd.weight", n_embd, vocab, weights->token_embd));
  HEADWISE_RETURN_IF_ERROR(LoadVector(file, "output_norm.weight", n_embd, weights->output_norm));
  if (file.FindTensor("output.weight") != nullptr) {
    HEADWISE_RETURN_IF_ERROR(LoadMatrix(file, "output.weight", n_embd, vocab, weights->output));
  }
  if (file.FindTensor("rope_freqs.weight") != nullptr) {
    HEADWISE_RETURN_IF_ERROR(
        LoadVector(file, "rope_freqs.weight", info.head_dim / 2, weights->rope_freqs));
  }
  // Every layer has at least 9 tensors: a block count past what the file
  // holds is a malformed file, not an allocation to attempt.
  if (info.n_layers < 1 || uint64_t(info.n_layers) > file.tensors().size() / 9) {
    return absl::InvalidArgumentError(absl::StrCat("block_count ", info.n_layers,
                                                   " but the file has ", file.tensors().size(),
                                                   " tensors (a layer needs at least 9)"));
  }
  weights->layers.resize(info.n_layers);
  for (uint32_t i = 0; i < info.n_layers; ++i) {
    LayerWeights& l = weights->layers[i];
    const std::string p = absl::StrCat("blk.", i, ".");
    HEADWISE_RETURN_IF_ERROR(LoadVector(file, p + "attn_norm.weight", n_embd, l.attn_norm));
    HEADWISE_RETURN_IF_ERROR(LoadMatrix(file, p + "attn_q.weight", n_embd, q_dim, l.wq));
    HEADWISE_RETURN_IF_ERROR(LoadMatrix(file, p + "attn_k.weight", n_embd, kv_dim, l.wk));
    HEADWISE_RETURN_IF_ERROR(LoadMatrix(file, p + "attn_v.weight", n_embd, kv_dim, l.wv));
    if (qkv_bias) {
      HEADWISE_RETURN_IF_ERROR(LoadVector(file, p + "attn_q.bias", q_dim, l.bq));
      HEADWISE_RETURN_IF_ERROR(LoadVector(file, p + "attn_k.bias", kv_dim, l.bk));
      HEADWISE_RETURN_IF_ERROR(LoadVector(file, p + "attn_v.bias", kv_dim, l.bv));
    }
    HEADWISE_RETURN_IF_ERROR(LoadMatrix(file, p + "attn_output.weight", q_dim, n_embd, l.wo));
    HEADWISE_RETURN_IF_ERROR(LoadVector(file, p + "ffn_norm.weight", n_embd, l.ffn_norm));
    HEADWISE_RETURN_IF_ERROR(LoadMatrix(file, p + "ffn_gate.weight", n_embd, n_ff, l.w_gate));
    HEADWISE_RETURN_IF_ERROR(LoadMatrix(file, p + "ffn_up.weight", n_embd, n_ff, l.w_up));
    HEADWISE_RETURN_IF_ERROR(LoadMatrix(file, p + "ffn_down.weight", n_ff, n_embd, l.w_down));
  }
  return weights;
}

}  // namespace headwise::model
