// session.json: {"version": 1, "id", "context_tokens", "world_size",
// "placement", "kv_block", "kv_dtype", "model": {architecture, name,
// n_layers, n_kv_heads, head_dim, vocab_size}, "blocks": [[layer, kv head,
// block, n_tokens, rank, index], ...]}.
#include "runtime/engine/session_snapshot.h"

#include <fstream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace headwise::engine {
namespace {

nlohmann::json Layout(const model::LlamaModel& llm, const EngineOptions& options) {
  const GenerateOptions& base = options.base;
  const model::ModelInfo& info = llm.info();
  return {{"world_size", base.transport != nullptr ? base.transport->size() : 1},
          {"kv_block", base.kv_block},
          {"kv_dtype", std::string(kernels::KvDtypeName(base.kv_dtype))},
          {"model",
           {{"architecture", info.architecture},
            {"name", info.name},
            {"n_layers", info.n_layers},
            {"n_kv_heads", info.n_kv_heads},
            {"head_dim", info.head_dim},
            {"vocab_size", info.vocab_size}}}};
}

}  // namespace

absl::Status SaveSnapshot(const model::LlamaModel& llm, const EngineOptions& options,
                          const std::string& id, kv::KvStore& store, int64_t context_tokens,
                          const std::filesystem::path& dir) {
  // An older snapshot of the session stops being one before its files change.
  std::error_code error;
  std::filesystem::remove(dir / kSessionFile, error);
  absl::StatusOr<std::vector<kv::SnapshotBlock>> table = store.Save(dir.string());
  if (!table.ok()) return table.status();
  nlohmann::json json = Layout(llm, options);
  json["version"] = 1;
  json["id"] = id;
  json["context_tokens"] = context_tokens;
  json["placement"] = cluster::PlacementName(options.base.placement);
  nlohmann::json& blocks = json["blocks"] = nlohmann::json::array();
  for (const kv::SnapshotBlock& b : *table) {
    blocks.push_back({b.tag.layer, b.tag.kv_head, b.tag.block, b.n_tokens, b.rank, b.index});
  }
  const std::filesystem::path file = dir / kSessionFile;
  const std::filesystem::path tmp = dir / (std::string(kSessionFile) + ".tmp");
  {
    std::ofstream out(tmp);
    out << json.dump() << "\n";
    out.flush();
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", tmp.string()));
  }
  std::filesystem::rename(tmp, file, error);
  if (error) {
    return absl::InternalError(absl::StrCat("cannot rename ", tmp.string(), ": ", error.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<LoadedSnapshot> LoadSnapshot(const model::LlamaModel& llm,
                                            const EngineOptions& options,
                                            const std::filesystem::path& dir,
                                            int64_t capacity_tokens) {
  const std::filesystem::path file = dir / kSessionFile;
  std::ifstream in(file);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", file.string()));
  const nlohmann::json json = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object() || json.value("version", 0) != 1 ||
      !json.contains("blocks") || !json["blocks"].is_array()) {
    return absl::DataLossError(absl::StrCat(file.string(), " is not a headwise session snapshot"));
  }
  // The model, KV layout and world must be the ones it was made with.
  const nlohmann::json want = Layout(llm, options);
  for (const auto& [key, value] : want.items()) {
    if (json.value(key, nlohmann::json()) != value) {
      return absl::FailedPreconditionError(absl::StrCat(
          "snapshot ", dir.string(), " was made with ", key, " ",
          json.value(key, nlohmann::json()).dump(), "; this server has ", value.dump()));
    }
  }
  LoadedSnapshot loaded;
  std::vector<kv::SnapshotBlock> table;
  try {
    loaded.id = json.at("id").get<std::string>();
    loaded.context_tokens = json.at("context_tokens").get<int64_t>();
    for (const nlohmann::json& b : json["blocks"]) {
      table.push_back({{b.at(0).get<int32_t>(), b.at(1).get<int32_t>(), b.at(2).get<int32_t>()},
                       b.at(3).get<int32_t>(),
                       b.at(4).get<int32_t>(),
                       b.at(5).get<int64_t>()});
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(absl::StrCat(file.string(), ": ", e.what()));
  }
  if (loaded.id != dir.filename().string() || loaded.context_tokens < 1 ||
      loaded.context_tokens >= capacity_tokens) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot ", dir.string(), " holds session '", loaded.id, "' of ",
                     loaded.context_tokens, " tokens; this server holds up to ", capacity_tokens));
  }
  // Snapshots keep no key summaries: a restored session is exact.
  GenerateOptions base = options.base;
  base.policy = kv::AttentionPolicy();
  absl::StatusOr<std::unique_ptr<kv::KvStore>> store = CreateStore(llm, base, capacity_tokens);
  if (!store.ok()) return store.status();
  if (absl::Status s = (*store)->Load(dir.string(), table, loaded.context_tokens); !s.ok()) {
    return s;
  }
  loaded.store = std::move(*store);
  return loaded;
}

}  // namespace headwise::engine
