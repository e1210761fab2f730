package eval

import (
	"encoding/json"
	"math"
	"os"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/model/clip"
	"github.com/lcpdiff/lcpdiff/internal/model/dino"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// The goldens are float64 sums over the saved float32 embeddings, as ours
// are; an independent float64 loop agreed with them to < 1e-12. The
// README's tolerance for CLIP-I / CLIP-T is 1e-6.
const (
	metricAtol    = 1e-12
	endToEndAtol  = 1e-6
	metricsGolden = "golden.safetensors"
)

// rows converts an embedding matrix [N, D] to one slice per row.
func rows(x *torch.Tensor) [][]float64 {
	n, d := x.Size(0), x.Size(1)
	v := x.Float64s()
	out := make([][]float64, n)
	for i := range out {
		out[i] = v[int64(i)*d : int64(i+1)*d]
	}
	return out
}

// pick is rows(x) at index (an I64 tensor of row numbers).
func pick(x *torch.Tensor, index *torch.Tensor) [][]float64 {
	all := rows(x)
	var out [][]float64
	for _, i := range torch.Data[int64](index) {
		out = append(out, all[i])
	}
	return out
}

func ints(x *torch.Tensor) []int {
	var out []int
	for _, v := range torch.Data[int64](x) {
		out = append(out, int(v))
	}
	return out
}

func checkScore(t *testing.T, name string, got, want, atol float64) {
	t.Helper()
	t.Logf("%-40s %.15f  want %.15f  diff %.3g", name, got, want, math.Abs(got-want))
	if !(math.Abs(got-want) <= atol) {
		t.Errorf("%s = %.15f, want %.15f", name, got, want)
	}
}

// TestDreamBenchMetrics recomputes eval/metrics.json from the saved
// embeddings of eval/golden.safetensors.
func TestDreamBenchMetrics(t *testing.T) {
	raw, err := os.ReadFile(golden.Path(t, "eval", "metrics.json"))
	if err != nil {
		t.Fatal(err)
	}
	var want struct {
		Subjects []struct {
			Name  string  `json:"name"`
			CLIPI float64 `json:"clip_i"`
			CLIPT float64 `json:"clip_t"`
			DINO  float64 `json:"dino"`
		} `json:"subjects"`
		CLIPIMean float64 `json:"clip_i_mean_over_subjects"`
		CLIPTMean float64 `json:"clip_t_mean_over_subjects"`
		DINOMean  float64 `json:"dino_mean_over_subjects"`
	}
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	f := golden.File(t, "eval", metricsGolden)
	var scores []SubjectScores
	for _, s := range want.Subjects {
		name := s.Name
		key := func(k string) *torch.Tensor { return golden.Tensor(t, f, "metrics."+name+"."+k) }
		got := SubjectScores{
			CLIPI: CLIPI(rows(key("clip_gen")), rows(key("clip_real"))),
			CLIPT: CLIPT(rows(key("clip_gen")), rows(key("clip_text")), ints(key("prompt_index"))),
			DINO:  DINOScore(rows(key("dino_gen")), rows(key("dino_real"))),
		}
		checkScore(t, name+" CLIP-I", got.CLIPI, s.CLIPI, metricAtol)
		checkScore(t, name+" CLIP-T", got.CLIPT, s.CLIPT, metricAtol)
		checkScore(t, name+" DINO", got.DINO, s.DINO, metricAtol)
		scores = append(scores, got)
	}
	if len(scores) != 2 {
		t.Fatalf("%d subjects, want 2", len(scores))
	}
	mean := MeanOverSubjects(scores)
	checkScore(t, "mean CLIP-I", mean.CLIPI, want.CLIPIMean, metricAtol)
	checkScore(t, "mean CLIP-T", mean.CLIPT, want.CLIPTMean, metricAtol)
	checkScore(t, "mean DINO", mean.DINO, want.DINOMean, metricAtol)
}

// TestCLIPMetricsEndToEnd runs the tiny CLIPModel on the golden pixels and
// token ids and scores the toy subjects of eval/tiny-clip/, both from the
// saved embeddings and from ours.
func TestCLIPMetricsEndToEnd(t *testing.T) {
	m, err := clip.LoadModel(golden.Path(t, "eval", "tiny-clip"), torch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	f := golden.File(t, "eval", "tiny-clip", "golden.safetensors")
	ours := map[string]*torch.Tensor{
		"image": m.ImageFeatures(golden.Tensor(t, f, "image.pixel_values")),
		"text":  m.TextFeatures(golden.Tensor(t, f, "text.input_ids")),
	}
	saved := map[string]*torch.Tensor{
		"image": golden.Tensor(t, f, "image.image_embeds"),
		"text":  golden.Tensor(t, f, "text.text_embeds"),
	}
	for _, src := range []struct {
		name string
		emb  map[string]*torch.Tensor
		atol float64
	}{{"saved", saved, metricAtol}, {"ours", ours, endToEndAtol}} {
		var scores []SubjectScores
		for _, subject := range []string{"dog", "backpack"} {
			key := func(k string) *torch.Tensor { return golden.Tensor(t, f, "metric."+subject+"."+k) }
			gen := pick(src.emb["image"], key("gen_index"))
			s := SubjectScores{
				CLIPI: CLIPI(gen, pick(src.emb["image"], key("real_index"))),
				CLIPT: CLIPT(gen, rows(src.emb["text"]), ints(key("prompt_index"))),
			}
			checkScore(t, src.name+" "+subject+" CLIP-I", s.CLIPI, key("clip_i").Item(), src.atol)
			checkScore(t, src.name+" "+subject+" CLIP-T", s.CLIPT, key("clip_t").Item(), src.atol)
			scores = append(scores, s)
		}
		mean := MeanOverSubjects(scores)
		checkScore(t, src.name+" mean CLIP-I", mean.CLIPI, golden.Tensor(t, f, "metric.clip_i_mean").Item(), src.atol)
		checkScore(t, src.name+" mean CLIP-T", mean.CLIPT, golden.Tensor(t, f, "metric.clip_t_mean").Item(), src.atol)
	}
}

// TestDINOScoreOfCrop embeds the golden photo and its crop with the tiny
// DINO model and scores one against the other: the cosine of the two
// golden class tokens.
func TestDINOScoreOfCrop(t *testing.T) {
	m, err := dino.Load(golden.Path(t, "eval", "dino_vits16_tiny.safetensors"), 4, torch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	f := golden.File(t, "eval", metricsGolden)
	emb := m.Embed(golden.Tensor(t, f, "dino.pixel_values"))
	want := rows(golden.Tensor(t, f, "dino.cls_embedding_f64"))
	got := rows(emb)
	checkScore(t, "DINO(photo, crop)", DINOScore(got[:1], got[1:]), Cosine(want[0], want[1]), endToEndAtol)
}

func TestCosine(t *testing.T) {
	if c := Cosine([]float64{3, 4}, []float64{6, 8}); math.Abs(c-1) > 1e-15 {
		t.Errorf("parallel: %v", c)
	}
	if c := Cosine([]float64{1, 0}, []float64{-2, 0}); c != -1 {
		t.Errorf("opposite: %v", c) // plain cosine: no clamping at 0
	}
}
