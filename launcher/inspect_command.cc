// `headwise inspect [MODEL]`: what a GGUF model is (shape, tensor types,
// parameters) and what its KV cache costs per token, as text or JSON; and
// `--dump-tensor NAME --out PATH`, which writes one tensor dequantized to raw
// little-endian f32 for the numpy oracle tests.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "fmt/format.h"
#include "kernels/quant.h"
#include "launcher/commands.h"
#include "launcher/options.h"
#include "nlohmann/json.hpp"
#include "runtime/model/gguf.h"
#include "runtime/model/model_info.h"

namespace headwise::launcher {
namespace {

struct InspectFlags {
  std::string model_positional;
  std::string model;
  bool json = false;
  std::string dump_tensor;
  std::string out;
};

struct KvDtype {
  const char* name;
  int bytes;
};
constexpr KvDtype kKvDtypes[] = {{"f32", 4}, {"f16", 2}, {"bf16", 2}};
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
constexpr double kMillionTokens = 1e6;

// "134.5 M", "1.2 B", "900 K".
std::string HumanCount(uint64_t n) {
  if (n >= 1'000'000'000) return fmt::format("{:.1f} B", n / 1e9);
  if (n >= 1'000'000) return fmt::format("{:.1f} M", n / 1e6);
  if (n >= 1'000) return fmt::format("{:.1f} K", n / 1e3);
  return std::to_string(n);
}

std::string HumanBytes(uint64_t n) {
  if (n >= kGiB) return fmt::format("{:.2f} GiB", n / kGiB);
  if (n >= 1024.0 * 1024.0) return fmt::format("{:.1f} MiB", n / (1024.0 * 1024.0));
  if (n >= 1024) return fmt::format("{:.1f} KiB", n / 1024.0);
  return fmt::format("{} B", n);
}

std::string Dims(const std::vector<uint64_t>& dims) {
  return "[" + fmt::format("{}", fmt::join(dims, ", ")) + "]";
}

void PrintText(const std::string& path, const model::ModelInfo& info) {
  auto row = [](std::string_view label, const std::string& value) {
    std::cout << fmt::format("{:<16}{}\n", label, value);
  };
  row("file", path);
  row("size", fmt::format("{} bytes ({})", info.file_size, HumanBytes(info.file_size)));
  row("gguf version", std::to_string(info.gguf_version));
  row("architecture", info.architecture);
  row("name", info.name.empty() ? "-" : info.name);
  row("layers", std::to_string(info.n_layers));
  row("embedding", std::to_string(info.n_embd));
  row("ffn", std::to_string(info.n_ff));
  row("heads", std::to_string(info.n_heads));
  row("kv heads", std::to_string(info.n_kv_heads));
  row("head dim", info.head_dim_v == info.head_dim
                      ? std::to_string(info.head_dim)
                      : fmt::format("{} (values {})", info.head_dim, info.head_dim_v));
  row("vocab", std::to_string(info.vocab_size));
  row("context length", std::to_string(info.context_length));
  row("rope base", fmt::format("{:g}", info.rope_freq_base));
  if (info.rope_dims != info.head_dim) row("rope dims", std::to_string(info.rope_dims));
  if (!info.rope_scaling_type.empty() || info.rope_scaling_factor != 0.0) {
    row("rope scaling",
        fmt::format("{} x{:g}{}", info.rope_scaling_type.empty() ? "?" : info.rope_scaling_type,
                    info.rope_scaling_factor,
                    info.rope_scaling_original_context > 0
                        ? fmt::format(" (from {} tokens)", info.rope_scaling_original_context)
                        : ""));
  }
  row("rms eps", fmt::format("{:g}", info.rms_eps));
  std::vector<std::string> by_type;
  for (const auto& [type, count] : info.tensor_count_by_type) {
    by_type.push_back(fmt::format("{} {}", count, type));
  }
  row("tensors", fmt::format("{} ({})", info.n_tensors, fmt::join(by_type, ", ")));
  row("parameters", fmt::format("{} ({})", HumanCount(info.n_params), info.n_params));
  bool first = true;
  for (const KvDtype& d : kKvDtypes) {
    const uint64_t per_token = model::KvBytesPerToken(info, d.bytes);
    row(first ? "kv per token" : "",
        fmt::format("{:<5}{:>8} bytes {:9.2f} GiB per 1M tokens", d.name, per_token,
                    per_token * kMillionTokens / kGiB));
    first = false;
  }
}

nlohmann::json ToJson(const std::string& path, const model::ModelInfo& info) {
  nlohmann::json kv_bytes = nlohmann::json::object();
  nlohmann::json kv_gib = nlohmann::json::object();
  for (const KvDtype& d : kKvDtypes) {
    const uint64_t per_token = model::KvBytesPerToken(info, d.bytes);
    kv_bytes[d.name] = per_token;
    kv_gib[d.name] = per_token * kMillionTokens / kGiB;
  }
  nlohmann::json j = {
      {"file", path},
      {"file_size_bytes", info.file_size},
      {"gguf_version", info.gguf_version},
      {"architecture", info.architecture},
      {"name", info.name},
      {"n_layers", info.n_layers},
      {"n_embd", info.n_embd},
      {"n_ff", info.n_ff},
      {"n_heads", info.n_heads},
      {"n_kv_heads", info.n_kv_heads},
      {"head_dim", info.head_dim},
      {"head_dim_v", info.head_dim_v},
      {"vocab_size", info.vocab_size},
      {"context_length", info.context_length},
      {"rope_freq_base", info.rope_freq_base},
      {"rope_dims", info.rope_dims},
      {"rms_eps", info.rms_eps},
      {"n_tensors", info.n_tensors},
      {"tensor_types", info.tensor_count_by_type},
      {"n_params", info.n_params},
      {"kv_bytes_per_token", kv_bytes},
      {"kv_gib_per_million_tokens", kv_gib},
  };
  if (!info.rope_scaling_type.empty()) j["rope_scaling_type"] = info.rope_scaling_type;
  if (info.rope_scaling_factor != 0.0) j["rope_scaling_factor"] = info.rope_scaling_factor;
  if (info.rope_scaling_original_context > 0) {
    j["rope_scaling_original_context"] = info.rope_scaling_original_context;
  }
  return j;
}

// Writes tensor `name` of `file` to `out_path` as f32, rows in file order.
absl::StatusOr<std::string> DumpTensor(const model::GgufFile& file, const std::string& name,
                                       const std::string& out_path) {
  const model::TensorInfo* t = file.FindTensor(name);
  if (t == nullptr) {
    return absl::NotFoundError(absl::StrCat(file.path(), ": no tensor named '", name, "'"));
  }
  const auto traits = kernels::TypeTraits(static_cast<uint32_t>(t->type));
  const std::string type_name = traits ? std::string(traits->name) : "unknown";
  if (!traits || !traits->can_dequantize) {
    return absl::UnimplementedError(absl::StrCat("tensor '", name, "' has type ", type_name,
                                                 ", which cannot be dequantized to f32 yet"));
  }
  const uint64_t row_len = t->dims[0];
  const uint64_t rows = t->n_elements / row_len;
  const uint64_t row_bytes = *kernels::RowBytes(t->type, row_len);  // checked when parsed
  std::ofstream out(out_path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write '", out_path, "'"));
  std::vector<float> buf(row_len);
  for (uint64_t r = 0; r < rows; ++r) {
    kernels::DequantizeRow(t->type, t->data + r * row_bytes, buf.data(),
                           static_cast<int64_t>(row_len));
    // The host is little-endian on every platform headwise builds for.
    out.write(reinterpret_cast<const char*>(buf.data()),
              static_cast<std::streamsize>(row_len * sizeof(float)));
  }
  out.close();
  if (!out) {
    return absl::DataLossError(absl::StrCat("writing '", out_path, "' failed (disk full?)"));
  }
  return fmt::format("{}: {} {} -> {} ({} f32, {} bytes)", name, type_name, Dims(t->dims), out_path,
                     t->n_elements, t->n_elements * sizeof(float));
}

int Fail(const absl::Status& status) {
  std::cerr << "headwise inspect: " << status.message() << "\n";
  return 1;
}

int RunInspect(const InspectFlags& flags) {
  // A positional MODEL wins over -m / $HEADWISE_MODEL / the default.
  const std::string path = flags.model_positional.empty() ? flags.model : flags.model_positional;
  if (flags.dump_tensor.empty() != flags.out.empty()) {
    return Fail(absl::InvalidArgumentError("--dump-tensor NAME and --out PATH go together"));
  }
  absl::StatusOr<std::unique_ptr<model::GgufFile>> file = model::GgufFile::Open(path);
  if (!file.ok()) return Fail(file.status());

  if (!flags.dump_tensor.empty()) {
    absl::StatusOr<std::string> done = DumpTensor(**file, flags.dump_tensor, flags.out);
    if (!done.ok()) return Fail(done.status());
    std::cout << *done << "\n";
    return 0;
  }

  absl::StatusOr<model::ModelInfo> info = model::ReadModelInfo(**file);
  if (!info.ok()) return Fail(info.status());
  if (flags.json) {
    std::cout << ToJson(path, *info).dump(2) << "\n";
  } else {
    PrintText(path, *info);
  }
  return 0;
}

}  // namespace

void RegisterInspectCommand(CLI::App& app, CommandRunner& run) {
  auto flags = std::make_shared<InspectFlags>();
  CLI::App* cmd = app.add_subcommand(
      "inspect", "Describe a GGUF model: shape, tensor types, parameters, KV bytes per token");
  cmd->add_option("MODEL", flags->model_positional, "GGUF model file (wins over -m)");
  AddModelOption(*cmd, flags->model);
  cmd->add_flag("--json", flags->json, "Print the report as one JSON object");
  cmd->add_option("--dump-tensor", flags->dump_tensor,
                  "Write this tensor dequantized to f32 (raw little-endian, row-major) to --out");
  cmd->add_option("--out", flags->out, "Output file for --dump-tensor");
  AddEnvTwins(*cmd);
  cmd->callback([flags, &run] { run = [flags] { return RunInspect(*flags); }; });
}

}  // namespace headwise::launcher
