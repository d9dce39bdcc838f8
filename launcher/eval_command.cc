// `headwise eval`: the fidelity harness of the approximate attention
// policies (runtime/engine/fidelity.h) on the default model. Passkey
// retrieval over context lengths x key depths, and next-token agreement and
// KL(exact || policy) per position band of a fixed text, for each policy
// under test against exact; every context is prefilled once and each policy
// continues it. Writes JSON (rewritten after every cell, so a long run's
// partial results survive); scripts/fidelity-report turns it into
// docs/FIDELITY.md and its figures. Runs distributed under mpirun like
// generate.
#include <sys/utsname.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "launcher/commands.h"
#include "launcher/options.h"
#include "launcher/runtime_setup.h"
#include "nlohmann/json.hpp"
#include "runtime/engine/fidelity.h"
#include "runtime/model/llama.h"
#include "runtime/model/tokenizer.h"

namespace headwise::launcher {
namespace {

struct EvalFlags {
  RuntimeFlags runtime;
  std::string policies =
      "exact,hybrid@0.25,hybrid@0.125,hybrid:bounds@0.25,quantkv@0.25,quantkv@0.125";
  std::string lengths = "1024,2048,4096,8192";
  std::string depths = "10";  // a count (evenly 0%..100%) or fractions "0.2,0.5"
  int32_t answer_tokens = 12;
  std::string text = "/usr/share/common-licenses/GPL-3";
  std::string band_starts = "512,1024,2048,4096,6144,7168";
  int32_t band_tokens = 32;
  uint64_t seed = 1;
  std::string out = "eval.json";
};

int Fail(const absl::Status& status) { return launcher::Fail("eval", status); }

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

absl::StatusOr<std::vector<int64_t>> ParseInts(const std::string& flag, const std::string& text) {
  std::vector<int64_t> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    char* end = nullptr;
    const std::string s(part);
    out.push_back(std::strtoll(s.c_str(), &end, 10));
    if (*end != '\0' || out.back() <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--", flag, " takes positive integers separated by commas, got '", text, "'"));
    }
  }
  return out;
}

// "N": N depths evenly from 0 to 1; "0.2,0.5": those.
absl::StatusOr<std::vector<double>> ParseDepths(const std::string& text) {
  std::vector<double> out;
  if (text.find_first_of(".,") == std::string::npos) {
    absl::StatusOr<std::vector<int64_t>> n = ParseInts("depths", text);
    if (!n.ok()) return n.status();
    if (n->size() != 1) return absl::InvalidArgumentError("--depths: one count");
    for (int64_t d = 0; d < n->front(); ++d) {
      out.push_back(n->front() > 1 ? double(d) / double(n->front() - 1) : 0.0);
    }
    return out;
  }
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    char* end = nullptr;
    const std::string s(part);
    out.push_back(std::strtod(s.c_str(), &end));
    if (*end != '\0' || !(out.back() >= 0 && out.back() <= 1)) {
      return absl::InvalidArgumentError("--depths: a count, or fractions in [0, 1] like 0.2,0.5");
    }
  }
  return out;
}

std::string Machine() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line, model = "unknown CPU";
  while (std::getline(cpuinfo, line)) {
    if (line.starts_with("model name")) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  }
  utsname u{};
  uname(&u);
  return absl::StrCat(std::thread::hardware_concurrency(), " cores, ", model, ", ", u.machine);
}

// This process's command line, as typed (the executable as "headwise").
std::string CommandLine() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> args;
  for (std::string arg; std::getline(in, arg, '\0');) args.push_back(arg);
  if (args.empty()) return "headwise eval";
  args[0] = "headwise";
  return absl::StrJoin(args, " ");
}

std::string Today() {
  const std::time_t now = std::time(nullptr);
  char day[16];
  std::strftime(day, sizeof(day), "%Y-%m-%d", std::gmtime(&now));
  return day;
}

// Whether `answer` names `key` as a whole number.
bool Names(const std::string& answer, const std::string& key) {
  for (size_t at = answer.find(key); at != std::string::npos; at = answer.find(key, at + 1)) {
    const bool before = at > 0 && std::isdigit(static_cast<unsigned char>(answer[at - 1]));
    const size_t after = at + key.size();
    if (!before &&
        !(after < answer.size() && std::isdigit(static_cast<unsigned char>(answer[after])))) {
      return true;
    }
  }
  return false;
}

class Evaluation {
 public:
  Evaluation(const EvalFlags& flags, model::LlamaModel& llm, const model::Tokenizer& tokenizer,
             engine::GenerateOptions options, std::vector<engine::PolicyUnderTest> policies,
             std::vector<double> depths, std::string command)
      : flags_(flags),
        depths_(std::move(depths)),
        llm_(llm),
        tokenizer_(tokenizer),
        options_(std::move(options)),
        policies_(std::move(policies)) {
    json_ = {{"command", command},
             {"model", flags.runtime.model},
             {"machine", Machine()},
             {"date", Today()},
             {"world_size", options_.transport != nullptr ? options_.transport->size() : 1},
             {"policies", nlohmann::json::array()}};
    for (const auto& p : policies_) {
      json_["policies"].push_back({{"label", p.label}, {"describe", p.policy.Describe()}});
    }
  }

  absl::Status Passkey(const std::vector<int64_t>& lengths) {
    nlohmann::json& out = json_["passkey"];
    out = {{"lengths", lengths},
           {"depths", nlohmann::json::array()},
           {"cells", nlohmann::json::array()}};
    out["depths"] = depths_;
    std::mt19937 rng(static_cast<uint32_t>(flags_.seed));
    std::uniform_int_distribution<int32_t> digits(10000, 99999);
    const Clock::time_point start = Clock::now();
    const int64_t cells = int64_t(lengths.size() * depths_.size());
    int64_t done = 0;
    for (int64_t length : lengths) {
      for (size_t d = 0; d < depths_.size(); ++d) {
        const std::string key = std::to_string(digits(rng));
        absl::StatusOr<std::vector<int32_t>> prompt = engine::PasskeyPrompt(
            llm_, tokenizer_, length - flags_.answer_tokens - 4, Depth(d), key);
        if (!prompt.ok()) return prompt.status();
        absl::StatusOr<std::unique_ptr<kv::KvStore>> store = Prefilled(*prompt, prompt->size() - 1);
        if (!store.ok()) return store.status();
        nlohmann::json cell = {{"length", length},
                               {"depth", Depth(d)},
                               {"prompt_tokens", prompt->size()},
                               {"key", key},
                               {"results", nlohmann::json::object()}};
        std::string line;
        for (const engine::PolicyUnderTest& p : policies_) {
          absl::StatusOr<engine::Continuation> answer = engine::ContinueUnder(
              llm_, tokenizer_, **store, prompt->back(), p.policy, flags_.answer_tokens, options_);
          if (!answer.ok()) return answer.status();
          const bool correct = Names(answer->text, key);
          cell["results"][p.label] = {
              {"answer", answer->text},
              {"correct", correct},
              {"decode_tokens_per_s",
               answer->tokens.size() / std::max(answer->decode_seconds, 1e-9)},
              {"tokens_attended", answer->stream.tokens_attended},
              {"tokens_total", answer->stream.tokens_total}};
          absl::StrAppend(&line, " ", p.label, correct ? " ok" : " MISS");
        }
        out["cells"].push_back(std::move(cell));
        ++done;
        std::fprintf(
            stderr,
            "eval: passkey %lld tokens, depth %.0f%% (%zu tokens):%s | %lld/%lld, eta %.0f s\n",
            static_cast<long long>(length), 100 * Depth(d), prompt->size(), line.c_str(),
            static_cast<long long>(done), static_cast<long long>(cells),
            Since(start) / done * (cells - done));
        if (absl::Status s = Write(); !s.ok()) return s;
      }
    }
    return absl::OkStatus();
  }

  absl::Status Bands(std::vector<int64_t> starts) {
    std::ifstream in(flags_.text, std::ios::binary);
    if (!in) return absl::NotFoundError("cannot read --text " + flags_.text);
    std::ostringstream text;
    text << in.rdbuf();
    const std::vector<int32_t> tokens = tokenizer_.Encode(text.str(), true, false);
    const int64_t limit = std::min<int64_t>(int64_t(tokens.size()), llm_.info().context_length);
    std::erase_if(starts, [&](int64_t s) { return s + flags_.band_tokens > limit; });
    std::sort(starts.begin(), starts.end());
    nlohmann::json& out = json_["bands"];
    out = {{"text", flags_.text},
           {"text_tokens", tokens.size()},
           {"positions", flags_.band_tokens},
           {"rows", nlohmann::json::array()}};
    if (starts.empty()) return Write();
    absl::StatusOr<std::unique_ptr<kv::KvStore>> store = Prefilled(tokens, 0);
    if (!store.ok()) return store.status();
    kv::KvStore& kv = **store;
    for (int64_t start : starts) {
      // The text up to the band, exactly (observed for quantkv), then each
      // policy teacher-forced over the band.
      if (absl::Status s = kv.set_policy(PrefillPolicy()); !s.ok()) return s;
      const std::span<const int32_t> all(tokens);
      if (absl::Status s = engine::Prefill(llm_, kv, all.subspan(kv.length(), start - kv.length()),
                                           options_, nullptr, nullptr);
          !s.ok()) {
        return s;
      }
      const std::span<const int32_t> band = all.subspan(start, flags_.band_tokens);
      kv::AttentionPolicy exact;
      absl::StatusOr<std::vector<std::vector<float>>> reference =
          engine::TeacherForced(llm_, kv, band, exact);
      if (!reference.ok()) return reference.status();
      nlohmann::json row = {{"start", start},
                            {"end", start + flags_.band_tokens},
                            {"top1", nlohmann::json::object()},
                            {"kl", nlohmann::json::object()}};
      std::string line;
      for (const engine::PolicyUnderTest& p : policies_) {
        if (p.policy.kind == kv::AttentionPolicy::Kind::kExact) continue;
        absl::StatusOr<std::vector<std::vector<float>>> got =
            engine::TeacherForced(llm_, kv, band, p.policy);
        if (!got.ok()) return got.status();
        double agree = 0, kl = 0;
        for (size_t i = 0; i < got->size(); ++i) {
          agree += engine::Argmax((*reference)[i]) == engine::Argmax((*got)[i]);
          kl += engine::KlDivergence((*reference)[i], (*got)[i]);
        }
        row["top1"][p.label] = agree / double(got->size());
        row["kl"][p.label] = kl / double(got->size());
        absl::StrAppend(&line, " ", p.label,
                        absl::StrFormat(" top-1 %.2f KL %.4f", agree / double(got->size()),
                                        kl / double(got->size())));
      }
      std::fprintf(stderr, "eval: band [%lld, %lld):%s\n", static_cast<long long>(start),
                   static_cast<long long>(start + flags_.band_tokens), line.c_str());
      out["rows"].push_back(std::move(row));
      if (absl::Status s = Write(); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

 private:
  double Depth(size_t d) const { return depths_[d]; }

  // Prefill runs under quantkv (prefill is exact under every policy) so its
  // observation window is there for the quantkv policies under test.
  kv::AttentionPolicy PrefillPolicy() const {
    kv::AttentionPolicy p = options_.policy;
    p.kind = kv::AttentionPolicy::Kind::kQuantKv;
    for (const auto& t : policies_) {
      if (t.policy.NeedsKeys()) p.key_bits = t.policy.key_bits;
    }
    return p;
  }

  // A store keeping every policy's summaries with tokens[0, n) prefilled.
  absl::StatusOr<std::unique_ptr<kv::KvStore>> Prefilled(std::span<const int32_t> tokens,
                                                         size_t n) {
    engine::GenerateOptions options = options_;
    options.policy = PrefillPolicy();
    kv::KvStoreOptions store_options = engine::StoreOptions(
        llm_, options, static_cast<int64_t>(tokens.size()) + flags_.answer_tokens + 1);
    store_options.keep_key_summaries = true;
    absl::StatusOr<std::unique_ptr<kv::KvStore>> store = kv::KvStore::Create(store_options);
    if (!store.ok()) return store.status();
    if (n > 0) {
      if (absl::Status s =
              engine::Prefill(llm_, **store, tokens.subspan(0, n), options, nullptr, nullptr);
          !s.ok()) {
        return s;
      }
    }
    return store;
  }

  absl::Status Write() const {
    const std::string tmp = flags_.out + ".tmp";
    {
      std::ofstream out(tmp);
      out << json_.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
      if (!out) return absl::UnavailableError("cannot write " + tmp);
    }
    if (std::rename(tmp.c_str(), flags_.out.c_str()) != 0) {
      return absl::UnavailableError("cannot rename " + tmp + " to " + flags_.out);
    }
    return absl::OkStatus();
  }

  const EvalFlags& flags_;
  const std::vector<double> depths_;
  model::LlamaModel& llm_;
  const model::Tokenizer& tokenizer_;
  const engine::GenerateOptions options_;
  const std::vector<engine::PolicyUnderTest> policies_;
  nlohmann::json json_;
};

int RunEval(const EvalFlags& flags, const std::string& command) {
  absl::StatusOr<std::vector<int64_t>> lengths = ParseInts("lengths", flags.lengths);
  if (!lengths.ok()) return Fail(lengths.status());
  absl::StatusOr<std::vector<int64_t>> starts = ParseInts("band-starts", flags.band_starts);
  if (!starts.ok()) return Fail(starts.status());
  absl::StatusOr<kv::AttentionPolicy> base = PolicyFromFlags(flags.runtime.attention);
  if (!base.ok()) return Fail(base.status());
  std::vector<engine::PolicyUnderTest> policies;
  for (absl::string_view spec : absl::StrSplit(flags.policies, ',', absl::SkipEmpty())) {
    absl::StatusOr<engine::PolicyUnderTest> p =
        engine::ParsePolicySpec(std::string_view(spec.data(), spec.size()), *base);
    if (!p.ok()) return Fail(p.status());
    policies.push_back(*p);
  }
  if (policies.empty() || policies.front().policy.kind != kv::AttentionPolicy::Kind::kExact) {
    return Fail(absl::InvalidArgumentError("--policies must start with exact (the reference)"));
  }
  absl::StatusOr<std::vector<double>> depths = ParseDepths(flags.depths);
  if (!depths.ok()) return Fail(depths.status());
  if (flags.answer_tokens < 1 || flags.band_tokens < 1) {
    return Fail(absl::InvalidArgumentError("--answer-tokens and --band-tokens must be >= 1"));
  }

  absl::StatusOr<Runtime> started = StartRuntime(flags.runtime, "eval");
  if (!started.ok()) return Fail(started.status());
  Runtime& rt = *started;
  if (rt.memory_rank()) return rt.cluster->ServeMemoryRank(flags.runtime.threads);
  auto fail = [&rt](const absl::Status& status) { return rt.FailJob("eval", status); };
  absl::StatusOr<std::unique_ptr<model::LlamaModel>> llm =
      model::LlamaModel::Load(flags.runtime.model, rt.pool.get());
  if (!llm.ok()) return fail(llm.status());
  absl::StatusOr<model::Tokenizer> tokenizer = model::Tokenizer::FromGguf((*llm)->file());
  if (!tokenizer.ok()) return fail(tokenizer.status());
  for (int64_t length : *lengths) {
    if (length > (*llm)->info().context_length) {
      return fail(absl::InvalidArgumentError(absl::StrCat("--lengths: ", length,
                                                          " is past the model's context of ",
                                                          (*llm)->info().context_length)));
    }
  }
  engine::GenerateOptions options = rt.base;
  options.policy = *base;
  Evaluation eval(flags, **llm, *tokenizer, options, policies, *depths, command);
  if (absl::Status s = eval.Passkey(*lengths); !s.ok()) return fail(s);
  if (absl::Status s = eval.Bands(*starts); !s.ok()) return fail(s);
  if (rt.cluster != nullptr) {
    if (absl::Status s = rt.cluster->StopMemoryRanks(); !s.ok()) return fail(s);
  }
  std::fprintf(stderr, "eval: wrote %s (scripts/fidelity-report %s makes docs/FIDELITY.md)\n",
               flags.out.c_str(), flags.out.c_str());
  return 0;
}

}  // namespace

void RegisterEvalCommand(CLI::App& app, CommandRunner& run) {
  auto flags = std::make_shared<EvalFlags>();
  CLI::App* cmd = app.add_subcommand(
      "eval",
      "Fidelity of the attention policies: passkey retrieval and next-token agreement/KL "
      "against exact (JSON for scripts/fidelity-report)");
  AddRuntimeOptions(*cmd, flags->runtime);
  cmd->add_option("--policies", flags->policies,
                  "Policies to compare, exact first: NAME[:OPTION...][@BUDGET] (hybrid: fraction "
                  "attended, options keys or bounds (the summary) and pooled (heads share the "
                  "budget); quantkv: fraction of the KV kept); other knobs from the policy "
                  "flags")
      ->capture_default_str();
  cmd->add_option("--lengths", flags->lengths, "Passkey context lengths in tokens")
      ->capture_default_str();
  cmd->add_option("--depths", flags->depths,
                  "Key depths per length: a count (evenly from 0% to 100%) or fractions (0.2,0.5)")
      ->capture_default_str();
  cmd->add_option("--answer-tokens", flags->answer_tokens, "Tokens generated per answer")
      ->capture_default_str();
  cmd->add_option("--text", flags->text, "The fixed text of the position bands")
      ->capture_default_str();
  cmd->add_option("--band-starts", flags->band_starts, "Where each position band starts")
      ->capture_default_str();
  cmd->add_option("--band-tokens", flags->band_tokens, "Positions per band")->capture_default_str();
  cmd->add_option("--seed", flags->seed, "Seed of the pass keys")->capture_default_str();
  cmd->add_option("-o,--out", flags->out, "The JSON written")->capture_default_str();
  AddEnvTwins(*cmd);
  cmd->callback([flags, &run] { run = [flags] { return RunEval(*flags, CommandLine()); }; });
}

}  // namespace headwise::launcher
