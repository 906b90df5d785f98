package gomlx

import (
	"bufio"
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// The same expectations the C harness reads (tests/c/expected.txt, made from
// the fixtures by tests/c_expected.rs).
type expectCase struct {
	name           string
	inputs, greedy []uint32
}

var root = filepath.Join("..", "..")

// expectedLines is the fields of every line of tests/c/<name> that is not
// empty or a comment.
func expectedLines(t *testing.T, name string) [][]string {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "tests", "c", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		if line := sc.Text(); line != "" && line[0] != '#' {
			out = append(out, strings.Fields(line))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func readExpected(t *testing.T) map[string]expectCase {
	t.Helper()
	out := map[string]expectCase{}
	for _, fs := range expectedLines(t, "expected.txt") {
		read := func(at int) ([]uint32, int) {
			n, _ := strconv.Atoi(fs[at])
			ids := make([]uint32, n)
			for i := range ids {
				v, _ := strconv.Atoi(fs[at+1+i])
				ids[i] = uint32(v)
			}
			return ids, at + 1 + n
		}
		in, at := read(1)
		gr, _ := read(at)
		out[fs[0]] = expectCase{fs[0], in, gr}
	}
	return out
}

const chatModelPath = "../../.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"

var question = []Message{{Role: "user", Content: "What is the capital of France?"}}

var (
	chatOnce  sync.Once
	chatModel *Model
	chatErr   error
)

func smol(t *testing.T) *Model {
	t.Helper()
	chatOnce.Do(func() { chatModel, chatErr = LoadModel(chatModelPath, WithContextLength(2048)) })
	if chatErr != nil {
		t.Fatal(chatErr)
	}
	return chatModel
}

func TestMain(m *testing.M) {
	base := MemoryActive()
	code := m.Run()
	if chatModel != nil {
		chatModel.Close()
	}
	if toolModel != nil {
		toolModel.Close()
	}
	ClearCache()
	if code == 0 && MemoryActive() != base {
		println("memory after closing every model:", MemoryActive(), "baseline:", base)
		code = 1
	}
	os.Exit(code)
}

func TestVersion(t *testing.T) {
	if ABIVersion() != HeaderABIVersion {
		t.Fatalf("ABI %d, header %d", ABIVersion(), HeaderABIVersion)
	}
	if !strings.Contains(Version(), ".") {
		t.Fatalf("version %q", Version())
	}
	if ok, err := DeviceAvailable("cpu"); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if _, err := DeviceAvailable("tpu"); err == nil || !strings.Contains(err.Error(), "unknown device") {
		t.Fatal(err)
	}
}

func TestFixtures(t *testing.T) {
	ctx := context.Background()
	n := 0
	for name, c := range readExpected(t) {
		if name == "smollm2_chat" {
			continue
		}
		n++
		t.Run(name, func(t *testing.T) {
			m, err := LoadModel(filepath.Join(root, "tests", "fixtures", "models", name), WithDevice(DeviceCPU))
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if info := m.Info(); info.HasTokenizer || info.VocabSize == 0 || info.Device != "cpu" {
				t.Fatalf("info %+v", info)
			}
			s := m.GenerateTokens(ctx, c.inputs, WithMaxTokens(len(c.greedy)), WithIgnoreEOS())
			_, ids, err := s.Text()
			if err != nil {
				t.Fatal(err)
			}
			if !equal(ids, c.greedy) {
				t.Fatalf("greedy ids %v, want %v", ids, c.greedy)
			}
			mt, err := s.Metrics()
			if err != nil || mt.FinishReason != FinishLength || mt.PromptTokens != len(c.inputs) || mt.GeneratedTokens != len(c.greedy) || mt.DecodeTokensPerSec <= 0 {
				t.Fatalf("metrics %+v %v", mt, err)
			}
			res, bm, err := m.ClassifyTokens(ctx, [][]uint32{c.inputs}, WithAnswerLogprobs())
			if err != nil || len(res) != 1 || res[0].Token != c.greedy[0] || res[0].Logprob > 0 || bm.Prompts != 1 {
				t.Fatalf("classify %+v %+v %v", res, bm, err)
			}
		})
	}
	if n < 10 {
		t.Fatalf("only %d fixture models", n)
	}
}

func equal(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestChat(t *testing.T) {
	m := smol(t)
	want := readExpected(t)["smollm2_chat"]
	info := m.Info()
	if info.Architecture != "llama" || info.NumLayers != 30 || info.VocabSize != 49152 || !info.HasTokenizer || info.ContextLength != 2048 {
		t.Fatalf("info %+v", info)
	}
	s := m.Chat(context.Background(), question, WithMaxTokens(32), WithLogprobs(2))
	var text strings.Builder
	var ids []uint32
	for tok := range s.Tokens() {
		if math.IsNaN(float64(tok.Logprob)) || len(tok.TopLogprobs) != 2 || tok.TopLogprobs[0].ID != tok.ID {
			t.Fatalf("token %+v", tok)
		}
		text.WriteString(tok.Text)
		ids = append(ids, tok.ID)
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	if text.String() != "The capital of France is Paris." || !equal(ids, want.greedy) {
		t.Fatalf("chat %q %v, want %v", text.String(), ids, want.greedy)
	}
	mt, err := s.Metrics()
	if err != nil || mt.FinishReason != FinishEOS || mt.PromptTokens != len(want.inputs) || mt.GeneratedTokens != len(ids)+1 || mt.PrefillTokensPerSec <= 0 {
		t.Fatalf("metrics %+v %v", mt, err)
	}
	if s.FinishReason() != FinishEOS {
		t.Fatal(s.FinishReason())
	}
	// A stream is ranged once.
	for range s.Tokens() {
		t.Fatal("second range yielded")
	}
}

func TestStopAndSession(t *testing.T) {
	m := smol(t)
	ctx := context.Background()
	text, _, err := m.Chat(ctx, question, WithStop("Paris")).Text()
	if err != nil || text != "The capital of France is " {
		t.Fatalf("%q %v", text, err)
	}
	sess, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	reply, _, err := sess.Chat(ctx, question).Text()
	if err != nil {
		t.Fatal(err)
	}
	s := sess.Chat(ctx, append(question, Message{Role: "assistant", Content: reply}, Message{Role: "user", Content: "And of Italy?"}))
	text, _, err = s.Text()
	mt, _ := s.Metrics()
	if err != nil || !strings.Contains(text, "Rome") || mt.PromptTokensEvaluated >= mt.PromptTokens {
		t.Fatalf("%q %v %+v", text, err, mt)
	}
	sess.Close()
	if err := sess.Chat(ctx, question).Err(); !errors.Is(err, ErrClosed) {
		t.Fatal(err)
	}
}

func TestClassify(t *testing.T) {
	m := smol(t)
	prompts := []string{"The capital of France is", "The capital of England is", "The capital of Italy is"}
	labels := []string{" Paris", " London", " Rome"}
	res, bm, err := m.Classify(context.Background(), prompts, WithLabels(labels...))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		var sum float32
		for _, p := range r.LabelProbs {
			sum += p
		}
		if r.Label != i || r.Text != labels[i] || math.Abs(float64(sum-1)) > 1e-4 {
			t.Fatalf("prompt %d: %+v", i, r)
		}
	}
	if bm.Prompts != 3 || bm.PromptsPerSec <= 0 || bm.SharedPrefixTokens == 0 {
		t.Fatalf("%+v", bm)
	}
	if _, _, err := m.Classify(context.Background(), prompts, WithLabels(" Paris", " Paris is")); err == nil || !strings.Contains(err.Error(), "same token") {
		t.Fatal(err)
	}
}

func TestBatchGenerate(t *testing.T) {
	m := smol(t)
	ctx := context.Background()
	prompts := []string{"The capital of France is", "One, two, three,"}
	out, bm, err := m.BatchGenerate(ctx, prompts, WithMaxTokens(6))
	if err != nil || len(out) != 2 || bm.GeneratedTokens != 12 {
		t.Fatalf("%+v %+v %v", out, bm, err)
	}
	for i, p := range prompts {
		text, ids, err := m.Generate(ctx, p, WithMaxTokens(6)).Text()
		if err != nil || text != out[i].Text || !equal(ids, out[i].Tokens) || out[i].FinishReason != FinishLength {
			t.Fatalf("row %d: %+v vs %q %v", i, out[i], text, err)
		}
	}
}

func TestCancel(t *testing.T) {
	m := smol(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := m.Chat(ctx, question, WithMaxTokens(1500), WithIgnoreEOS())
	n := 0
	for range s.Tokens() {
		n++
		if n == 3 {
			go cancel() // from another goroutine
		}
	}
	if !errors.Is(s.Err(), context.Canceled) || s.FinishReason() != FinishCancelled || n < 3 || n > 100 {
		t.Fatalf("n %d err %v reason %v", n, s.Err(), s.FinishReason())
	}
	// A cancelled context does not start a generation.
	if err := m.Chat(ctx, question).Err(); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	// Breaking out of the loop stops and frees the generation.
	s = m.Chat(context.Background(), question, WithMaxTokens(1500), WithIgnoreEOS())
	for range s.Tokens() {
		break
	}
	if s.Err() != nil || s.FinishReason() != FinishCancelled {
		t.Fatal(s.Err(), s.FinishReason())
	}
	// Cancel from another goroutine.
	s = m.Chat(context.Background(), question, WithMaxTokens(1500), WithIgnoreEOS())
	n = 0
	for range s.Tokens() {
		if n++; n == 2 {
			go s.Cancel()
		}
	}
	if s.Err() != nil || s.FinishReason() != FinishCancelled || n > 100 {
		t.Fatal(n, s.Err(), s.FinishReason())
	}
}

func TestConcurrent(t *testing.T) {
	m := smol(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			text, _, err := m.Chat(context.Background(), question, WithMaxTokens(32)).Text()
			if err == nil && text != "The capital of France is Paris." {
				err = errors.New("answer " + text)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestCloseWhileStreaming(t *testing.T) {
	m, err := LoadModel(chatModelPath)
	if err != nil {
		t.Fatal(err)
	}
	s := m.Chat(context.Background(), question, WithMaxTokens(1500), WithIgnoreEOS())
	n := 0
	for range s.Tokens() {
		if n++; n == 1 {
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Err(); err == nil || !strings.Contains(err.Error(), "the model was closed") || n > 100 {
		t.Fatal(n, err)
	}
	if err := m.Close(); err != nil {
		t.Fatal("second close:", err)
	}
	if err := m.Generate(context.Background(), "x").Err(); !errors.Is(err, ErrClosed) {
		t.Fatal(err)
	}
	if _, _, err := m.Classify(context.Background(), []string{"x"}); !errors.Is(err, ErrClosed) {
		t.Fatal(err)
	}
}

func TestErrors(t *testing.T) {
	ctx := context.Background()
	var gerr *Error
	if _, err := LoadModel("/nonexistent/model"); !errors.As(err, &gerr) || gerr.Op != "gm_model_load" {
		t.Fatal(err)
	}
	fixture := filepath.Join(root, "tests", "fixtures", "models", "llama_tied")
	if _, err := LoadModel(fixture, WithAdapter("/nonexistent/adapter")); err == nil || !strings.Contains(err.Error(), "adapter path /nonexistent/adapter: no such directory") {
		t.Fatal(err)
	}
	if _, err := LoadModel(fixture, WithDType("int4")); err == nil || !strings.Contains(err.Error(), "unknown dtype") {
		t.Fatal(err)
	}
	m, err := LoadModel(fixture, WithDevice(DeviceCPU))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Generate(ctx, "hello").Err(); err == nil || !strings.Contains(err.Error(), "no tokenizer") {
		t.Fatal(err)
	}
	s := m.Generate(ctx, "hello")
	for range s.Tokens() {
		t.Fatal("a failed stream yields nothing")
	}
	if _, err := s.Metrics(); err == nil {
		t.Fatal("metrics of a failed stream")
	}
	if err := m.GenerateTokens(ctx, nil).Err(); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatal(err)
	}
	if err := m.GenerateTokens(ctx, []uint32{1, 1 << 30}).Err(); err == nil || !strings.Contains(err.Error(), "outside the vocabulary") {
		t.Fatal(err)
	}
	if err := m.GenerateTokens(ctx, []uint32{1}, WithTemperature(-1)).Err(); err == nil || !strings.Contains(err.Error(), "temperature") {
		t.Fatal(err)
	}
	if err := m.GenerateTokens(ctx, []uint32{1}, WithMaxTokens(-1)).Err(); err == nil {
		t.Fatal("negative max tokens")
	}
	c := smol(t)
	if err := c.Generate(ctx, "a\x00b").Err(); err == nil || !strings.Contains(err.Error(), "NUL") {
		t.Fatal(err)
	}
	if err := c.Generate(ctx, "a\xffb").Err(); err == nil || !strings.Contains(err.Error(), "UTF-8") {
		t.Fatal(err)
	}
	if err := c.Chat(ctx, nil).Err(); err == nil || !strings.Contains(err.Error(), "at least one message") {
		t.Fatal(err)
	}
	if err := c.Chat(ctx, question, WithChatTemplateArgs(map[string]any{"f": func() {}})).Err(); err == nil {
		t.Fatal("unmarshalable template args")
	}
	if _, _, err := c.BatchGenerate(ctx, nil); err == nil {
		t.Fatal("empty batch")
	}
	if _, _, err := c.Classify(ctx, []string{"x"}, WithLabels()); err == nil {
		t.Fatal("empty label set")
	}
}

func TestDiscoverAndMemory(t *testing.T) {
	found, err := Discover(filepath.Join(root, "tests", "fixtures", "models"))
	if err != nil || len(found) < 10 {
		t.Fatal(len(found), err)
	}
	for _, d := range found {
		if d.Architecture == "" || strings.HasSuffix(d.Path, "_q4") != (d.QuantBits == 4) {
			t.Fatalf("%+v", d)
		}
	}
	if _, err := Discover("/nonexistent"); err == nil {
		t.Fatal("discover of a missing dir")
	}
	prev := SetCacheLimit(1 << 30)
	if SetCacheLimit(prev) != 1<<30 {
		t.Fatal("cache limit round trip")
	}
	ClearCache()
	if MemoryCache() != 0 || MemoryPeak() < MemoryActive() {
		t.Fatal(MemoryCache(), MemoryPeak(), MemoryActive())
	}
}

// Sixteen goroutines stream from one model at once (rows of one batch); each
// gets the answer it gets alone.
func TestSixteenGoroutinesGetTheirSoloAnswers(t *testing.T) {
	m := smol(t)
	ctx := context.Background()
	topics := []string{"France", "Japan", "Italy", "Spain", "Germany", "Canada", "Brazil", "Egypt",
		"Kenya", "India", "China", "Peru", "Chile", "Norway", "Greece", "Mexico"}
	ask := func(i int) []Message {
		q := "What is the capital of " + topics[i] + "?"
		if i%3 == 1 {
			q = "Name one famous dish from " + topics[i] + " and say why people like it."
		}
		return []Message{{Role: "user", Content: q}}
	}
	opts := func(i int) []GenerateOption { return []GenerateOption{WithMaxTokens(8 + i%5*3)} }
	alone := make([]string, len(topics))
	for i := range topics {
		text, _, err := m.Chat(ctx, ask(i), opts(i)...).Text()
		if err != nil {
			t.Fatal(err)
		}
		alone[i] = text
	}
	together := make([]string, len(topics))
	rows := make([]int, len(topics))
	errs := make([]error, len(topics))
	var wg sync.WaitGroup
	for i := range topics {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := m.Chat(ctx, ask(i), opts(i)...)
			together[i], _, errs[i] = s.Text()
			if mt, err := s.Metrics(); err == nil {
				rows[i] = mt.BatchRowsMax
			}
		}()
	}
	wg.Wait()
	shared := 0
	for i := range topics {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if together[i] != alone[i] {
			t.Errorf("%s: together %q, alone %q", topics[i], together[i], alone[i])
		}
		if rows[i] > shared {
			shared = rows[i]
		}
	}
	if shared < 4 {
		t.Fatalf("at most %d streams shared a step", shared)
	}
}
