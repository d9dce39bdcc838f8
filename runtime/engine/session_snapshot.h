// A persisted session on disk (DESIGN.md "session"): `<snapshot dir>/<id>/`
// holds each rank's block file (KvStore::Save) and rank 0's session.json —
// the id, the context length, the model and KV layout it was made with, and
// the table of which block is where. session.json is written last (via a
// rename), so a snapshot is either whole or absent.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/engine/engine.h"
#include "runtime/kv/kv_store.h"
#include "runtime/model/llama.h"

namespace headwise::engine {

inline constexpr char kSessionFile[] = "session.json";

// Writes session `id` (its store holds `context_tokens` tokens) under `dir`.
absl::Status SaveSnapshot(const model::LlamaModel& llm, const EngineOptions& options,
                          const std::string& id, kv::KvStore& store, int64_t context_tokens,
                          const std::filesystem::path& dir);

struct LoadedSnapshot {
  std::string id;
  int64_t context_tokens = 0;
  std::unique_ptr<kv::KvStore> store;
};

// Reads the session under `dir` into a new store of `capacity_tokens`.
// FailedPrecondition naming the snapshot when its model, KV layout or world
// size differ from this engine's; DataLoss for a corrupt file.
absl::StatusOr<LoadedSnapshot> LoadSnapshot(const model::LlamaModel& llm,
                                            const EngineOptions& options,
                                            const std::filesystem::path& dir,
                                            int64_t capacity_tokens);

}  // namespace headwise::engine
