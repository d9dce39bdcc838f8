// Tokenizer tests: pre-tokenizer splits (expected pieces from HF tokenizers),
// tiny hand-built byte-level BPE and SentencePiece vocabularies, the streaming
// decoder, GGUF metadata errors, and the real SmolLM2 vocabulary against ids from
// tests/oracle/tokenizer_oracle.py (skipped when the model file is absent).
//
// Setting HEADWISE_TOKENIZER_IDS_OUT=path makes SmolLm2Test.OracleCases write
// {text: ids} for every line of tests/oracle/tokenizer_cases.txt (or of the file
// HEADWISE_TOKENIZER_CASES names), which
//   tests/oracle/tokenizer_oracle.py [--cases F] --headwise-ids path
// compares against the HF reference.
#include "runtime/model/tokenizer.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/model/gguf.h"
#include "runtime/model/gguf_test_writer.h"
#include "runtime/model/unicode.h"

namespace headwise::model {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kSmolLm2Path[] = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
constexpr char kCasesPath[] = "tests/oracle/tokenizer_cases.txt";

std::vector<std::string> Pieces(PreTokenizerKind kind, std::string_view text) {
  std::vector<std::string> out;
  for (std::string_view p : PreTokenize(kind, text)) out.emplace_back(p);
  return out;
}

// ---------------------------------------------------------------- unicode.h

TEST(UnicodeTest, Classes) {
  EXPECT_TRUE(IsLetter('a'));
  EXPECT_TRUE(IsLetter(0x00E9));   // é
  EXPECT_TRUE(IsLetter(0x4E2D));   // 中
  EXPECT_TRUE(IsLetter(0x02B0));   // ʰ (Lm)
  EXPECT_FALSE(IsLetter(0x0301));  // combining acute (Mn)
  EXPECT_FALSE(IsLetter('1'));
  EXPECT_TRUE(IsNumber('7'));
  EXPECT_TRUE(IsNumber(0x00BD));  // ½ (No)
  EXPECT_TRUE(IsNumber(0x216B));  // Ⅻ (Nl)
  EXPECT_TRUE(IsNumber(0x0663));  // Arabic-Indic 3
  EXPECT_FALSE(IsNumber('x'));
  for (uint32_t ws : {0x09u, 0x0Au, 0x0Bu, 0x0Cu, 0x0Du, 0x20u, 0x85u, 0xA0u, 0x1680u, 0x2000u,
                      0x200Au, 0x2028u, 0x2029u, 0x202Fu, 0x205Fu, 0x3000u}) {
    EXPECT_TRUE(IsWhitespace(ws)) << ws;
  }
  for (uint32_t not_ws : {0x1Cu, 0x200Bu, 0x180Eu, 0xFEFFu, 0x61u}) {
    EXPECT_FALSE(IsWhitespace(not_ws)) << not_ws;
  }
}

TEST(UnicodeTest, Utf8) {
  size_t pos = 0;
  EXPECT_EQ(DecodeUtf8("\xF0\x9F\x98\x80", &pos), 0x1F600u);
  EXPECT_EQ(pos, 4u);
  for (std::string_view bad :
       {"\x80", "\xC0\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\xFF", "\xE2\x82"}) {
    pos = 0;
    EXPECT_EQ(DecodeUtf8(bad, &pos), kReplacementChar);
    EXPECT_EQ(pos, 1u);
    EXPECT_FALSE(IsValidUtf8(bad));
  }
  EXPECT_TRUE(IsValidUtf8("h\xC3\xA9 \xEF\xBF\xBD"));  // a genuine U+FFFD is valid
  EXPECT_EQ(ValidUtf8Prefix("ab\xF0\x9F"), 2u);
  EXPECT_TRUE(IsIncompleteUtf8Sequence("\xF0\x9F\x98"));
  EXPECT_TRUE(IsIncompleteUtf8Sequence("\xE2"));
  EXPECT_FALSE(IsIncompleteUtf8Sequence("\xF0\x9F\x98\x80"));  // complete
  EXPECT_FALSE(IsIncompleteUtf8Sequence("\xE0\x80"));          // overlong: never valid
  EXPECT_FALSE(IsIncompleteUtf8Sequence("\x80"));
  std::string s;
  AppendUtf8(0x20AC, &s);
  AppendUtf8(0xD800, &s);  // a surrogate becomes U+FFFD
  EXPECT_EQ(s, "\xE2\x82\xAC\xEF\xBF\xBD");
}

// Expected pieces produced by HF tokenizers (tokenizer_oracle.py --pretokenize KIND).
constexpr std::string_view kPreText1 = "Hey you'RE 12345 ab\n\n  cd!!!\r\n  ";
constexpr std::string_view kPreText2 = "x  \t\ty 1½ ?!\nz  ";

TEST(PreTokenizeTest, Gpt2) {
  EXPECT_THAT(
      Pieces(PreTokenizerKind::kGpt2, kPreText1),
      ElementsAre("Hey", " you", "'", "RE", " 12345", " ab", "\n\n ", " cd", "!!!", "\r\n  "));
  EXPECT_THAT(Pieces(PreTokenizerKind::kGpt2, kPreText2),
              ElementsAre("x", "  \t", "\t", "y", " 1½", " ?!", "\n", "z", "  "));
}

TEST(PreTokenizeTest, DigitsGpt2) {
  EXPECT_THAT(Pieces(PreTokenizerKind::kDigitsGpt2, kPreText1),
              ElementsAre("Hey", " you", "'", "RE", " ", "1", "2", "3", "4", "5", " ab", "\n\n ",
                          " cd", "!!!", "\r\n  "));
  EXPECT_THAT(Pieces(PreTokenizerKind::kDigitsGpt2, kPreText2),
              ElementsAre("x", "  \t", "\t", "y", " ", "1", "½", " ?!", "\n", "z", "  "));
}

TEST(PreTokenizeTest, Llama3) {
  EXPECT_THAT(Pieces(PreTokenizerKind::kLlama3, kPreText1),
              ElementsAre("Hey", " you", "'RE", " ", "123", "45", " ab", "\n\n", " ", " cd",
                          "!!!\r\n", "  "));
  EXPECT_THAT(Pieces(PreTokenizerKind::kLlama3, kPreText2),
              ElementsAre("x", "  \t", "\ty", " ", "1½", " ?!\n", "z", "  "));
}

TEST(PreTokenizeTest, Qwen2) {
  EXPECT_THAT(Pieces(PreTokenizerKind::kQwen2, kPreText1),
              ElementsAre("Hey", " you", "'RE", " ", "1", "2", "3", "4", "5", " ab", "\n\n", " ",
                          " cd", "!!!\r\n", "  "));
  EXPECT_THAT(Pieces(PreTokenizerKind::kQwen2, kPreText2),
              ElementsAre("x", "  \t", "\ty", " ", "1", "½", " ?!\n", "z", "  "));
}

TEST(PreTokenizeTest, PiecesCoverAnyBytes) {
  const std::string text = "a\xFF\xC3 b\x80\x80 12\xF0\x9F";
  for (PreTokenizerKind kind : {PreTokenizerKind::kGpt2, PreTokenizerKind::kDigitsGpt2,
                                PreTokenizerKind::kLlama3, PreTokenizerKind::kQwen2}) {
    std::string joined;
    for (std::string_view p : PreTokenize(kind, text)) {
      EXPECT_FALSE(p.empty());
      joined += p;
    }
    EXPECT_EQ(joined, text);
  }
}

// ------------------------------------------------------ tiny byte-level BPE

// GPT-2's byte -> code point table, written independently of tokenizer.cc.
std::string ByteLevel(std::string_view bytes) {
  std::string out;
  for (unsigned char b : bytes) {
    uint32_t cp = b;
    if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174)) {
      uint32_t n = 0;
      for (uint32_t c = 0; c < b; ++c) {
        if (!((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || c >= 174)) ++n;
      }
      cp = 256 + n;
    }
    AppendUtf8(cp, &out);
  }
  return out;
}

// Ids 0..2 control tokens, 3..258 the 256 single bytes, then merged tokens.
TokenizerVocab ByteLevelVocab(std::vector<std::string> merges) {
  TokenizerVocab v;
  v.model = "gpt2";
  v.pre = "gpt2";
  v.tokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  v.types = {TokenType::kControl, TokenType::kControl, TokenType::kControl};
  for (int b = 0; b < 256; ++b) {
    v.tokens.push_back(ByteLevel(std::string(1, static_cast<char>(b))));
    v.types.push_back(TokenType::kNormal);
  }
  for (const std::string& m : merges) {
    const size_t space = m.find(' ');
    v.tokens.push_back(m.substr(0, space) + m.substr(space + 1));
    v.types.push_back(TokenType::kNormal);
  }
  v.merges = std::move(merges);
  v.bos_id = 0;
  v.eos_id = 2;
  v.unk_id = 0;
  return v;
}

int32_t ByteId(char c) { return 3 + static_cast<unsigned char>(c); }

Tokenizer MustBuild(TokenizerVocab v) {
  absl::StatusOr<Tokenizer> t = Tokenizer::FromVocab(std::move(v));
  EXPECT_TRUE(t.ok()) << t.status();
  return *std::move(t);
}

TEST(ByteLevelBpeTest, MergesByRank) {
  // "e l" outranks "l l": "hell" -> h, el, l (and no merge joins those).
  Tokenizer a = MustBuild(ByteLevelVocab({"e l", "l l", "h e"}));
  EXPECT_THAT(a.Encode("hell", false, false), ElementsAre(ByteId('h'), 259, ByteId('l')));
  // "l l" first: h, e, ll -> he, ll.
  Tokenizer b = MustBuild(ByteLevelVocab({"l l", "e l", "h e"}));
  EXPECT_THAT(b.Encode("hell", false, false), ElementsAre(261, 259));
  // Equal ranks merge leftmost first.
  EXPECT_THAT(b.Encode("lll", false, false), ElementsAre(259, ByteId('l')));
}

TEST(ByteLevelBpeTest, EncodeDecode) {
  Tokenizer t = MustBuild(ByteLevelVocab({"h e", "l l", "he ll", "hell o", "\u0120 w", "o r",
                                          "\u0120w or", "\u0120wor l", "\u0120worl d"}));
  const int32_t hello = 262, world = 267;
  EXPECT_EQ(t.TokenText(world), "\u0120world");
  EXPECT_EQ(t.TokenPiece(world), " world");
  EXPECT_THAT(t.Encode("hello world", false, false), ElementsAre(hello, world));
  // No BOS by default for gpt2 vocabularies, and none requested here either.
  EXPECT_THAT(t.Encode("hello world", true, false), ElementsAre(hello, world));
  const std::string mixed = "hello\n\n  \tworld 123 \xC3\xA9\xF0\x9F\x98\x80!";
  EXPECT_EQ(t.Decode(t.Encode(mixed, false, false)), mixed);
  EXPECT_TRUE(t.Encode("", true, true).empty());
}

TEST(ByteLevelBpeTest, SpecialTokens) {
  Tokenizer t = MustBuild(ByteLevelVocab({"h e"}));
  const std::string text = "<|im_start|>he<|im_end|><|im_end|>";
  EXPECT_THAT(t.Encode(text, false, true), ElementsAre(1, 259, 2, 2));
  std::vector<int32_t> plain = t.Encode(text, false, false);
  EXPECT_EQ(plain.size(), 33u);  // 34 bytes, one token each but the merged "he"
  EXPECT_EQ(t.Decode(plain), text);
  EXPECT_EQ(t.Decode(t.Encode(text, false, true)), text);
  EXPECT_EQ(t.Decode(t.Encode(text, false, true), /*render_special=*/false), "he");
  EXPECT_TRUE(t.IsEog(2));
  EXPECT_TRUE(t.IsEog(0));  // <|endoftext|>
  EXPECT_FALSE(t.IsEog(1));
}

TEST(ByteLevelBpeTest, AddBosFromVocab) {
  TokenizerVocab v = ByteLevelVocab({});
  v.add_bos = true;
  v.add_eos = true;
  Tokenizer t = MustBuild(std::move(v));
  EXPECT_THAT(t.Encode("a", true, false), ElementsAre(0, ByteId('a'), 2));
  EXPECT_THAT(t.Encode("a", false, false), ElementsAre(ByteId('a')));
  // Llama-3 pre-tokenizers add BOS by default, as llama.cpp does.
  TokenizerVocab l = ByteLevelVocab({});
  l.pre = "llama-bpe";
  EXPECT_THAT(MustBuild(std::move(l)).Encode("a", true, false), ElementsAre(0, ByteId('a')));
}

TEST(ByteLevelBpeTest, IgnoreMergesForLlama3) {
  // "abc" is a token no merge reaches; Llama-3 (ignore_merges) uses it whole.
  TokenizerVocab v = ByteLevelVocab({"a b"});
  v.tokens.push_back("abc");
  v.types.push_back(TokenType::kNormal);
  TokenizerVocab l = v;
  l.pre = "llama3";
  EXPECT_THAT(MustBuild(std::move(v)).Encode("abc", false, false), ElementsAre(259, ByteId('c')));
  EXPECT_THAT(MustBuild(std::move(l)).Encode("abc", false, false), ElementsAre(260));
}

TEST(ByteLevelBpeTest, MissingByteTokens) {
  TokenizerVocab v;
  v.pre = "gpt2";
  v.tokens = {"<unk>", "a", "b"};
  v.types = {TokenType::kUnknown, TokenType::kNormal, TokenType::kNormal};
  v.unk_id = 0;
  // Dropped, not unk, as HF tokenizers does for byte-level BPE.
  EXPECT_THAT(MustBuild(std::move(v)).Encode("abc", false, false), ElementsAre(1, 2));
}

TEST(ByteLevelBpeTest, LongWordIsNotQuadratic) {
  Tokenizer t = MustBuild(ByteLevelVocab({"a a", "aa aa", "aaaa aaaa"}));
  const std::string word(200000, 'a');
  std::vector<int32_t> ids = t.Encode(word, false, false);
  EXPECT_EQ(ids.size(), 200000u / 8);
  EXPECT_EQ(t.Decode(ids), word);
}

// Random byte strings (ill-formed UTF-8 included) survive Encode -> Decode, and
// the streaming decoder only ever emits well-formed UTF-8. `odd_byte` is one the
// vocabulary has a token for (SmolLM2 has none for 0xFF).
void CheckRandomBytes(const Tokenizer& t, int rounds, std::string_view odd_byte) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  // clang-format off
  const std::string_view alphabet[] = {
      "a", " ", "\n", "\t", "\r", "!", "1", "'s", "<|im_end|>", "\xC3\xA9", "\xF0\x9F\x98\x80",
      "\xE4\xB8\xAD", "\xE2\x80\xA8", "\x80", "\xF0\x9F", odd_byte};
  // clang-format on
  for (int round = 0; round < rounds; ++round) {
    std::string text;
    const int n = static_cast<int>(rng() % 24);
    for (int i = 0; i < n; ++i) text += alphabet[rng() % std::size(alphabet)];
    for (bool parse_special : {false, true}) {
      std::vector<int32_t> ids = t.Encode(text, false, parse_special);
      ASSERT_EQ(t.Decode(ids), text);
      StreamingDecoder stream(t);
      std::string streamed;
      for (int32_t id : ids) streamed += stream.Push(id);
      streamed += stream.Flush();
      ASSERT_TRUE(IsValidUtf8(streamed));
      if (IsValidUtf8(text)) {
        ASSERT_EQ(streamed, text);
      }
    }
  }
}

TEST(ByteLevelBpeTest, RandomBytesRoundTrip) {
  CheckRandomBytes(MustBuild(ByteLevelVocab({"a a", "\u0120 a", "1 1", "' s"})), 500, "\xFF");
}

// ------------------------------------------------------- tiny SentencePiece

// Ids: 0 <unk>, 1 <s>, 2 </s>, 3..258 <0xXX>, then the pieces below.
TokenizerVocab SpmVocab(bool with_byte_tokens = true) {
  TokenizerVocab v;
  v.model = "llama";
  v.tokens = {"<unk>", "<s>", "</s>"};
  v.types = {TokenType::kUnknown, TokenType::kControl, TokenType::kControl};
  v.scores = {0, 0, 0};
  if (with_byte_tokens) {
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      v.tokens.push_back(name);
      v.types.push_back(TokenType::kByte);
      v.scores.push_back(0);
    }
  }
  const std::pair<const char*, float> pieces[] = {{"\u2581hello", -1}, {"\u2581world", -1.5},
                                                  {"\u2581wor", -2},   {"ll", -2},
                                                  {"llo", -2.5},       {"\u2581he", -3},
                                                  {"or", -3},          {"ld", -3.5},
                                                  {"\u2581w", -4},     {"\u2581h", -5},
                                                  {"\u2581", -6},      {"h", -7},
                                                  {"e", -7},           {"l", -7},
                                                  {"o", -7},           {"w", -7},
                                                  {"r", -7},           {"d", -7},
                                                  {"a", -7},           {"b", -7},
                                                  {"c", -7},           {"ab", -8},
                                                  {"bc", -7.5}};
  for (const auto& [text, score] : pieces) {
    v.tokens.push_back(text);
    v.types.push_back(TokenType::kNormal);
    v.scores.push_back(score);
  }
  v.bos_id = 1;
  v.eos_id = 2;
  v.unk_id = 0;
  return v;
}

TEST(SentencePieceTest, EncodeDecode) {
  Tokenizer t = MustBuild(SpmVocab());
  const int32_t hello = t.FindToken("\u2581hello"), world = t.FindToken("\u2581world");
  ASSERT_GE(hello, 0);
  EXPECT_TRUE(t.add_bos());
  EXPECT_THAT(t.Encode("hello world", true, false), ElementsAre(1, hello, world));
  EXPECT_THAT(t.Encode("hello world", false, false), ElementsAre(hello, world));
  EXPECT_EQ(t.Decode(t.Encode("hello world", false, false)), "hello world");
  EXPECT_EQ(t.Decode(t.Encode("hello world", true, false)), "<s> hello world");
  EXPECT_EQ(t.Decode(t.Encode("hello world", true, false), false), "hello world");
  EXPECT_EQ(t.Decode(t.Encode(" hello", false, false)), " hello");
  EXPECT_TRUE(t.IsEog(2));
}

TEST(SentencePieceTest, HigherScoreMergesFirst) {
  TokenizerVocab v = SpmVocab();
  v.add_space_prefix = false;
  Tokenizer t = MustBuild(v);
  // "bc" (-7.5) beats "ab" (-8).
  EXPECT_THAT(t.Encode("abc", false, false), ElementsAre(t.FindToken("a"), t.FindToken("bc")));
  v.scores[t.FindToken("ab")] = -1;
  Tokenizer swapped = MustBuild(std::move(v));
  EXPECT_THAT(swapped.Encode("abc", false, false),
              ElementsAre(swapped.FindToken("ab"), swapped.FindToken("c")));
}

TEST(SentencePieceTest, ByteFallbackAndUnknown) {
  Tokenizer t = MustBuild(SpmVocab());
  // "é" = C3 A9 has no piece: byte tokens <0xC3> <0xA9> (ids 3 + byte).
  EXPECT_THAT(t.Encode("h\xC3\xA9", false, false),
              ElementsAre(t.FindToken("\u2581h"), 3 + 0xC3, 3 + 0xA9));
  EXPECT_EQ(t.Decode(t.Encode("h\xC3\xA9 hello", false, false)), "h\xC3\xA9 hello");
  Tokenizer no_bytes = MustBuild(SpmVocab(/*with_byte_tokens=*/false));
  EXPECT_THAT(no_bytes.Encode("h\xC3\xA9", false, false),
              ElementsAre(no_bytes.FindToken("\u2581h"), 0, 0));
}

TEST(SentencePieceTest, SpecialTokensAndSpacePrefix) {
  Tokenizer t = MustBuild(SpmVocab());
  const int32_t hello = t.FindToken("\u2581hello");
  // After a special token, the next text gets the space prefix, as in llama.cpp.
  EXPECT_THAT(t.Encode("<s>hello</s>", false, true), ElementsAre(1, hello, 2));
  std::vector<int32_t> plain = t.Encode("<s>hello", false, false);
  EXPECT_EQ(plain.front(), t.FindToken("\u2581"));
  EXPECT_EQ(t.Decode(plain), "<s>hello");
}

// -------------------------------------------------------- streaming decoder

TEST(StreamingDecoderTest, HoldsBackSplitCharacters) {
  Tokenizer t = MustBuild(ByteLevelVocab({}));
  const std::string text = "a\xF0\x9F\x98\x80 \xC3\xA9!";  // "a😀 é!"
  std::vector<int32_t> ids = t.Encode(text, false, false);
  ASSERT_EQ(ids.size(), text.size());  // one token per byte: every character split
  StreamingDecoder stream(t);
  std::vector<std::string> outs;
  std::string all;
  for (int32_t id : ids) {
    outs.push_back(stream.Push(id));
    EXPECT_TRUE(IsValidUtf8(outs.back())) << outs.size();
    all += outs.back();
  }
  all += stream.Flush();
  EXPECT_EQ(all, text);
  EXPECT_THAT(outs, ElementsAre("a", "", "", "", "\xF0\x9F\x98\x80", " ", "", "\xC3\xA9", "!"));
}

TEST(StreamingDecoderTest, IllFormedBytesBecomeReplacementCharacters) {
  Tokenizer t = MustBuild(ByteLevelVocab({}));
  StreamingDecoder stream(t);
  EXPECT_EQ(stream.Push(ByteId('\x80')), "\xEF\xBF\xBD");  // stray continuation byte
  EXPECT_EQ(stream.Push(ByteId('\xF0')), "");
  EXPECT_EQ(stream.Push(ByteId('\x9F')), "");
  EXPECT_EQ(stream.Push(ByteId('x')), "\xEF\xBF\xBDx");  // F0 9F then 'x': one U+FFFD
  EXPECT_EQ(stream.Push(ByteId('\xE2')), "");
  EXPECT_EQ(stream.Flush(), "\xEF\xBF\xBD");  // incomplete at the end
  EXPECT_EQ(stream.Flush(), "");
}

TEST(StreamingDecoderTest, SentencePieceMatchesDecode) {
  Tokenizer t = MustBuild(SpmVocab());
  std::vector<int32_t> ids = t.Encode("hello w\xF0\x9F\x98\x80rld", true, false);
  StreamingDecoder stream(t, /*render_special=*/false);
  std::string all;
  for (int32_t id : ids) all += stream.Push(id);
  all += stream.Flush();
  EXPECT_EQ(all, t.Decode(ids, false));
  EXPECT_EQ(all, "hello w\xF0\x9F\x98\x80rld");
}

// --------------------------------------------------------- construction errors

TEST(TokenizerErrorsTest, NamesWhatIsWrong) {
  TokenizerVocab bert = ByteLevelVocab({});
  bert.model = "bert";
  absl::StatusOr<Tokenizer> t = Tokenizer::FromVocab(bert);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(t.status().message(), HasSubstr("'bert'"));

  TokenizerVocab pre = ByteLevelVocab({});
  pre.pre = "chatglm-bpe";
  t = Tokenizer::FromVocab(pre);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(t.status().message(), HasSubstr("'chatglm-bpe'"));

  TokenizerVocab merges = ByteLevelVocab({});
  merges.merges = {"a b", "nospace"};
  t = Tokenizer::FromVocab(merges);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(), HasSubstr("merges[1]"));

  TokenizerVocab ids = ByteLevelVocab({});
  ids.eos_id = 100000;
  EXPECT_EQ(Tokenizer::FromVocab(ids).status().code(), absl::StatusCode::kInvalidArgument);

  TokenizerVocab scores = SpmVocab();
  scores.scores.pop_back();
  t = Tokenizer::FromVocab(scores);
  EXPECT_THAT(t.status().message(), HasSubstr("scores"));

  EXPECT_EQ(Tokenizer::FromVocab(TokenizerVocab{}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// A tiny SentencePiece model written as a GGUF image, read back through FromGguf.
TEST(TokenizerGgufTest, ReadsMetadata) {
  using namespace testing;  // NOLINT: the GGUF writer helpers
  TokenizerVocab v = SpmVocab();
  std::vector<EncodedValue> scores, types;
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    scores.push_back(F32(v.scores[i]));
    types.push_back(I32(static_cast<int32_t>(v.types[i])));
  }
  GgufTestWriter w;
  w.Add("tokenizer.ggml.model", Str("llama"))
      .Add("tokenizer.ggml.tokens", StrArray(v.tokens))
      .Add("tokenizer.ggml.scores", Array(GgufValueType::kFloat32, scores))
      .Add("tokenizer.ggml.token_type", Array(GgufValueType::kInt32, types))
      .Add("tokenizer.ggml.bos_token_id", U32(1))
      .Add("tokenizer.ggml.eos_token_id", U32(2))
      .Add("tokenizer.ggml.add_bos_token", Bool(false));
  const std::vector<uint8_t> image = w.Build();
  absl::StatusOr<std::unique_ptr<GgufFile>> gguf = GgufFile::FromBuffer(image.data(), image.size());
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  absl::StatusOr<Tokenizer> t = Tokenizer::FromGguf(**gguf);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_FALSE(t->add_bos());
  EXPECT_EQ(t->bos(), 1);
  EXPECT_EQ(t->unk(), -1);
  EXPECT_EQ(t->vocab_size(), static_cast<int32_t>(v.tokens.size()));
  EXPECT_THAT(t->Encode("hello", true, false), ElementsAre(t->FindToken("\u2581hello")));

  GgufTestWriter missing;
  missing.Add("tokenizer.ggml.model", Str("llama"));
  const std::vector<uint8_t> image2 = missing.Build();
  gguf = GgufFile::FromBuffer(image2.data(), image2.size());
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  EXPECT_THAT(Tokenizer::FromGguf(**gguf).status().message(), HasSubstr("tokenizer.ggml.tokens"));

  GgufTestWriter wrong;
  wrong.Add("tokenizer.ggml.model", Str("gpt2"))
      .Add("tokenizer.ggml.tokens", Array(GgufValueType::kUint32, {U32(1)}));
  const std::vector<uint8_t> image3 = wrong.Build();
  gguf = GgufFile::FromBuffer(image3.data(), image3.size());
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  absl::Status s = Tokenizer::FromGguf(**gguf).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("tokenizer.ggml.tokens[0]"));
}

// ------------------------------------------------------ real SmolLM2 vocabulary

class SmolLm2Test : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::ifstream(kSmolLm2Path).good()) return;
    absl::StatusOr<std::unique_ptr<GgufFile>> gguf = GgufFile::Open(kSmolLm2Path);
    ASSERT_TRUE(gguf.ok()) << gguf.status();
    absl::StatusOr<Tokenizer> t = Tokenizer::FromGguf(**gguf);
    ASSERT_TRUE(t.ok()) << t.status();
    tokenizer_ = new Tokenizer(*std::move(t));
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
  }
  void SetUp() override {
    if (tokenizer_ == nullptr)
      GTEST_SKIP() << kSmolLm2Path << " not found (run scripts/ model fetch)";
  }
  static const Tokenizer& tok() { return *tokenizer_; }

 private:
  static inline Tokenizer* tokenizer_ = nullptr;
};

TEST_F(SmolLm2Test, Metadata) {
  EXPECT_EQ(tok().vocab_size(), 49152);
  EXPECT_EQ(tok().bos(), 1);
  EXPECT_EQ(tok().eos(), 2);
  EXPECT_EQ(tok().unk(), 0);
  EXPECT_EQ(tok().pad(), 2);
  EXPECT_FALSE(tok().add_bos());
  EXPECT_TRUE(tok().IsEog(2));  // <|im_end|>
  EXPECT_TRUE(tok().IsEog(0));  // <|endoftext|>
  EXPECT_FALSE(tok().IsEog(1));
  EXPECT_FALSE(tok().IsEog(19556));
  EXPECT_EQ(tok().TokenPiece(1), "<|im_start|>");
  EXPECT_EQ(tok().TokenPiece(905), " world");
}

// Ids from tokenizer_oracle.py --emit-cpp (HF tokenizers on the same vocabulary).
TEST_F(SmolLm2Test, KnownIds) {
  const std::pair<std::string, std::vector<int32_t>> cases[] = {
      {"Hello world", {19556, 905}},
      {"I'm sure they'll say it's fine, don't you think? We've seen it.",
       {57,   5248, 2090, 502,  3060, 1643, 357,  506,  4979, 28,
        1326, 982,  346,  1510, 47,   1046, 3543, 2269, 357,  30}},
      {"Café naïve résumé façade Ångström",
       {51, 1939, 2756, 15486, 46494, 412, 2756, 5422, 2756, 40852, 5549, 223, 863, 1321, 45682}},
      {"你好，世界！这是一个测试。",
       {18645, 250, 48392, 138,   12831, 7906,  240, 178,   239, 230,
        8083,  219, 48287, 27830, 43340, 43222, 229, 16313, 239, 19076}},
      {"Emoji: 😀👍🏽🇺🇸 and ❤️ 🤗",
       {10809, 33777, 42,  40303, 218, 10813, 235, 231, 10813, 233,   138, 10813, 225,
        135,   10813, 225, 133,   284, 4636,  247, 114, 31752, 15107, 114, 241}},
      {"Numbers 12345678 and 3.14159 and 1,000,000",
       {39006, 216, 33, 34, 35,  36,  37, 38, 39, 40, 284, 216, 35, 30, 33,
        36,    33,  37, 41, 284, 216, 33, 28, 32, 32, 32,  28,  32, 32, 32}},
      {"\n\n  \t", {39892, 197}},
      {"Hello\r\nWorld\r\n", {19556, 201, 198, 11265, 2738}},
      {"   leading and trailing spaces   ", {256, 2899, 284, 35079, 5600, 333}},
      {"def foo(x):\n    return x ** 2  # comment\n",
       {1604, 29856, 24, 104, 727, 472, 1003, 1792, 1903, 216, 34, 216, 907, 5189, 198}},
      {"<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
       {1, 4093, 198, 1780, 314, 216, 34, 27, 34, 47, 2, 198, 1, 520, 9531, 198}},
      {"text<|endoftext|>more text <|im_end|>", {2692, 0, 3143, 1694, 216, 2}},
  };
  for (const auto& [text, ids] : cases) {
    EXPECT_EQ(tok().Encode(text, /*add_special=*/true, /*parse_special=*/true), ids) << text;
    EXPECT_EQ(tok().Decode(ids), text);
  }
  // SmolLM2 has no token for byte 0x04; HF drops it, and so do we.
  EXPECT_THAT(tok().Encode("a\x04"
                           "b",
                           false, false),
              ElementsAre(81, 82));
  // Without parse_special the marker is plain text.
  std::vector<int32_t> plain = tok().Encode("<|im_start|>", false, false);
  EXPECT_GT(plain.size(), 1u);
  EXPECT_EQ(tok().Decode(plain), "<|im_start|>");
}

TEST_F(SmolLm2Test, RoundTripAndStreaming) {
  const std::string text =
      "Mixed: ASCII, accents \u00E9\u00E8\u00FC, CJK \u4E2D\u6587, emoji \U0001F600\U0001F1FA"
      "\U0001F1F8,\n\n  \t whitespace runs, digits 12345678, <|im_start|>special<|im_end|>\r\n";
  std::vector<int32_t> ids = tok().Encode(text, true, true);
  EXPECT_EQ(tok().Decode(ids), text);
  StreamingDecoder stream(tok());
  std::string streamed;
  for (int32_t id : ids) {
    std::string out = stream.Push(id);
    EXPECT_TRUE(IsValidUtf8(out));
    streamed += out;
  }
  streamed += stream.Flush();
  EXPECT_EQ(streamed, text);
  CheckRandomBytes(tok(), 500, "\xC3");
  const std::string long_word(100000, 'a');
  EXPECT_EQ(tok().Decode(tok().Encode(long_word, false, false)), long_word);
}

// Case-file escapes, as tokenizer_oracle.py reads them.
std::string Unescape(std::string_view line) {
  std::string out;
  for (size_t i = 0; i < line.size(); ++i) {
    if (line[i] != '\\' || i + 1 == line.size()) {
      out += line[i];
      continue;
    }
    const char n = line[++i];
    if (n == 'u' && i + 1 < line.size() && line[i + 1] == '{') {
      const size_t end = line.find('}', i);
      AppendUtf8(std::stoul(std::string(line.substr(i + 2, end - i - 2)), nullptr, 16), &out);
      i = end;
    } else {
      out += n == 'n' ? '\n' : n == 't' ? '\t' : n == 'r' ? '\r' : n;
    }
  }
  return out;
}

std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

TEST_F(SmolLm2Test, OracleCases) {
  const char* env_cases = std::getenv("HEADWISE_TOKENIZER_CASES");
  const std::string cases_path = env_cases != nullptr ? env_cases : kCasesPath;
  std::ifstream cases(cases_path);
  ASSERT_TRUE(cases.good()) << cases_path;
  std::string json = "{";
  std::string line;
  int n = 0;
  while (std::getline(cases, line)) {
    if (line.empty() || line[0] == '#') continue;
    const std::string text = Unescape(line);
    std::vector<int32_t> ids = tok().Encode(text, false, true);
    EXPECT_EQ(tok().Decode(ids), text);
    json += (n++ ? ",\n " : "\n ") + JsonString(text) + ": [";
    for (size_t i = 0; i < ids.size(); ++i) json += (i ? ", " : "") + std::to_string(ids[i]);
    json += "]";
  }
  json += "\n}\n";
  EXPECT_GT(n, 10);
  if (const char* out = std::getenv("HEADWISE_TOKENIZER_IDS_OUT")) {
    std::ofstream(out) << json;
  }
}

}  // namespace
}  // namespace headwise::model
