package eval

import (
	"fmt"
	"math"
)

// DreamBench subject-fidelity and prompt-fidelity scores (DreamBooth, Ruiz
// et al. 2023, Sec. 4.1), computed per subject from embeddings, one row per
// image or prompt:
//
//	CLIP-I = mean over (generated i, real j) of cos(CLIP_img(g_i), CLIP_img(r_j))
//	DINO   = mean over (generated i, real j) of cos(DINO(g_i), DINO(r_j))
//	CLIP-T = mean over generated i of cos(CLIP_img(g_i), CLIP_txt(prompt(i)))
//
// CLIP embeddings are CLIPModel's projected image_embeds / text_embeds and
// DINO's the ViT's normed class token. The cosine is plain: not CLIPScore's
// 100 * max(cos, 0), so a score may be negative. Sums run in float64.

// Cosine is u.v / (|u| |v|).
func Cosine(u, v []float64) float64 {
	if len(u) != len(v) {
		panic(fmt.Sprintf("eval.Cosine: lengths %d and %d", len(u), len(v)))
	}
	var uv, uu, vv float64
	for i := range u {
		uv += u[i] * v[i]
		uu += u[i] * u[i]
		vv += v[i] * v[i]
	}
	return uv / (math.Sqrt(uu) * math.Sqrt(vv))
}

// meanPairCosine is the mean cosine over every (gen, real) pair; NaN when
// either set is empty.
func meanPairCosine(gen, real [][]float64) float64 {
	var sum float64
	for _, g := range gen {
		for _, r := range real {
			sum += Cosine(g, r)
		}
	}
	return sum / float64(len(gen)*len(real))
}

// CLIPI is a subject's CLIP-I from the CLIP image embeddings of its
// generated and real images.
func CLIPI(gen, real [][]float64) float64 { return meanPairCosine(gen, real) }

// DINOScore is a subject's DINO score from the DINO embeddings of its
// generated and real images.
func DINOScore(gen, real [][]float64) float64 { return meanPairCosine(gen, real) }

// CLIPT is a subject's CLIP-T: gen are the CLIP image embeddings of its
// generated images, text the CLIP text embeddings of its prompts, and
// prompt[i] the row of text that generated image i was made from.
func CLIPT(gen, text [][]float64, prompt []int) float64 {
	if len(prompt) != len(gen) {
		panic(fmt.Sprintf("eval.CLIPT: %d prompt indices for %d images", len(prompt), len(gen)))
	}
	var sum float64
	for i, g := range gen {
		sum += Cosine(g, text[prompt[i]])
	}
	return sum / float64(len(gen))
}

// SubjectScores are one subject's scores, or their benchmark means.
type SubjectScores struct {
	CLIPI, CLIPT, DINO float64
}

// MeanOverSubjects is the benchmark value: each score averaged over the
// subjects, every subject weighing the same. It equals the mean over all
// pairs only when every subject has the same counts, as in DreamBench's
// 25 prompts x 4 images.
func MeanOverSubjects(subjects []SubjectScores) SubjectScores {
	var m SubjectScores
	for _, s := range subjects {
		m.CLIPI += s.CLIPI
		m.CLIPT += s.CLIPT
		m.DINO += s.DINO
	}
	n := float64(len(subjects))
	return SubjectScores{CLIPI: m.CLIPI / n, CLIPT: m.CLIPT / n, DINO: m.DINO / n}
}
