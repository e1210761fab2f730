package train

// Training a model folder's VAE (diffusers' AutoencoderKL) from scratch, as
// the toy world's model needs before its UNet can learn anything: the
// reconstruction loss of a sampled latent plus the LDM recipe's small KL
// term, then the scaling factor that brings the latents to unit variance
// (how SD's 0.18215 was chosen), both written back into the folder.

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/lcpdiff/lcpdiff/internal/atomicfile"
	"github.com/lcpdiff/lcpdiff/internal/data"
	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/model/vae"
	"github.com/lcpdiff/lcpdiff/internal/pipeline"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// VAEConfig is one VAE training run.
type VAEConfig struct {
	Steps     int
	BatchSize int
	// LR is AdamW's peak learning rate: reached by a linear warm-up over
	// WarmupSteps, then decayed along a cosine to a tenth of it at the last
	// step, so that the last steps polish rather than jump.
	LR          float64
	WarmupSteps int
	// KLWeight weighs the KL divergence of the posterior from N(0, I)
	// against the reconstruction error, both summed over an image as in
	// the LDM recipe (whose weight is 1e-6): small enough that the VAE
	// reconstructs sharply, large enough to keep the latents bounded.
	KLWeight float64
	// SubjectWeight is how much more the reconstruction error of a pixel
	// inside a subject's mask (grown by a pixel) counts than a
	// background's: the toy world's grounds are mostly per-pixel noise,
	// which no VAE can learn and which would otherwise drown the error of
	// the small subjects whose shapes and textures the model must keep.
	// 0 is a plain MSE.
	SubjectWeight float64
	// ClipGradNorm caps the gradients' global norm (0: no cap).
	ClipGradNorm float64
	// DecoderOnly trains the decoder (decoder.*, post_quant_conv.*) alone
	// on the frozen encoder's latents, as SD's ft-MSE VAE was made: the
	// latent space stays as it was, and with it the scaling factor and any
	// UNet trained on it, so a better decoder needs no retraining
	// downstream.
	DecoderOnly bool
	// Flip mirrors half of the training images left to right.
	Flip bool
	// Seed seeds the batches, the flips and the posterior samples.
	Seed uint64
	// ScaleImages is how many training images measure the scaling factor.
	ScaleImages int
	// LogEvery is the interval of the CSV log's rows, in steps.
	LogEvery int
}

// DefaultVAEConfig is the recipe the built-in toy-world model's VAE was
// trained with (scripts/train-toyworld.sh): 1,400 steps of 8 images, about
// 13 minutes on one CPU thread of this project's 2-core machine (1.8
// steps/s; 1.35 with another training beside it). Five minutes (300 steps
// of 16) left the subjects blobs: 17.8 dB test PSNR.
func DefaultVAEConfig() VAEConfig {
	return VAEConfig{
		Steps: 1400, BatchSize: 8, LR: 2e-3, WarmupSteps: 50, KLWeight: 1e-6, SubjectWeight: 9, ClipGradNorm: 1,
		Flip: true, ScaleImages: 256, LogEvery: 10,
	}
}

// Validate names the first setting that cannot work.
func (c VAEConfig) Validate() error {
	switch {
	case c.Steps < 1:
		return fmt.Errorf("train-vae: steps %d: want at least 1", c.Steps)
	case c.BatchSize < 1:
		return fmt.Errorf("train-vae: batch size %d: want at least 1", c.BatchSize)
	case !(c.LR > 0):
		return fmt.Errorf("train-vae: learning rate %g: want > 0", c.LR)
	case c.WarmupSteps < 0:
		return fmt.Errorf("train-vae: warm-up steps %d: want 0 or more", c.WarmupSteps)
	case !(c.KLWeight >= 0):
		return fmt.Errorf("train-vae: kl weight %g: want 0 or more", c.KLWeight)
	case !(c.SubjectWeight >= 0):
		return fmt.Errorf("train-vae: subject weight %g: want 0 or more", c.SubjectWeight)
	case !(c.ClipGradNorm >= 0):
		return fmt.Errorf("train-vae: clip grad norm %g: want 0 or more", c.ClipGradNorm)
	case c.ScaleImages < 1:
		return fmt.Errorf("train-vae: scale images %d: want at least 1", c.ScaleImages)
	case c.LogEvery < 1:
		return fmt.Errorf("train-vae: log every %d: want at least 1", c.LogEvery)
	}
	return nil
}

// lrAt is the learning rate of step (1-based): warm-up, then cosine decay
// to LR/10.
func (c VAEConfig) lrAt(step int) float64 {
	if step <= c.WarmupSteps {
		return c.LR * float64(step) / float64(c.WarmupSteps)
	}
	span := c.Steps - c.WarmupSteps
	if span <= 1 {
		return c.LR
	}
	progress := float64(step-c.WarmupSteps-1) / float64(span-1)
	return c.LR * (0.1 + 0.9*0.5*(1+math.Cos(math.Pi*progress)))
}

// VAEImages are every frame and image of a manifest, decoded once and
// brought to one square size: the VAE learns pixels, not records.
type VAEImages struct {
	Images []*data.RGB
	// Subjects are, per image, the union of its subjects' masks grown by
	// a pixel (255 inside): where SubjectWeight applies.
	Subjects []*data.Gray
	// Firsts are the indices of each record's first frame, in manifest
	// order: one image per scene, for showing reconstructions.
	Firsts []int
}

// LoadVAEImages decodes every frame of m's records; an image that is not
// size x size is centre-cropped to a square and resized (bicubic). Size 0
// is the first image's shorter side.
func LoadVAEImages(m *data.Manifest, size int) (*VAEImages, error) {
	if size != 0 && size < 8 {
		return nil, fmt.Errorf("train-vae: image size %d: want at least 8", size)
	}
	out := &VAEImages{}
	for _, r := range m.Records {
		out.Firsts = append(out.Firsts, len(out.Images))
		for i := range r.Frames {
			f, err := r.LoadFrame(i)
			if err != nil {
				return nil, err
			}
			if size == 0 {
				size = min(f.Image.W, f.Image.H)
			}
			img, mask := squareImage(f.Image, subjectsMask(f), size)
			out.Images = append(out.Images, img)
			out.Subjects = append(out.Subjects, mask)
		}
	}
	if len(out.Images) == 0 {
		return nil, fmt.Errorf("train-vae: %s holds no images", m.Path)
	}
	return out, nil
}

// subjectsMask is the union of a frame's subject masks, grown by one
// pixel in the eight directions so that outlines count as the subject.
func subjectsMask(f *data.Frame) *data.Gray {
	w, h := f.Image.W, f.Image.H
	out := data.NewGray(w, h)
	for _, m := range f.Masks {
		for y := range h {
			for x := range w {
				if m.Pix[y*w+x] == 0 {
					continue
				}
				for dy := -1; dy <= 1; dy++ {
					for dx := -1; dx <= 1; dx++ {
						if xx, yy := x+dx, y+dy; xx >= 0 && xx < w && yy >= 0 && yy < h {
							out.Pix[yy*w+xx] = 255
						}
					}
				}
			}
		}
	}
	return out
}

// squareImage is img and its mask centre-cropped to a square and resized
// to size.
func squareImage(img *data.RGB, mask *data.Gray, size int) (*data.RGB, *data.Gray) {
	if img.W == size && img.H == size {
		return img, mask
	}
	side := min(img.W, img.H)
	x0, y0 := (img.W-side)/2, (img.H-side)/2
	r := image.Rect(x0, y0, x0+side, y0+side)
	return img.Crop(r).Resize(size, size, data.Bicubic), mask.Crop(r).Resize(size, size, data.Nearest)
}

// flipped is img mirrored left to right.
func flipped(img *data.RGB) *data.RGB {
	return &data.RGB{W: img.W, H: img.H, Pix: mirrorRows(img.Pix, img.W, img.H, 3)}
}

// flippedMask is m mirrored left to right.
func flippedMask(m *data.Gray) *data.Gray {
	return &data.Gray{W: m.W, H: m.H, Pix: mirrorRows(m.Pix, m.W, m.H, 1)}
}

// mirrorRows mirrors every row of a w x h image of c-byte pixels.
func mirrorRows(pix []uint8, w, h, c int) []uint8 {
	out := make([]uint8, len(pix))
	for y := range h {
		row := y * w * c
		for x := range w {
			copy(out[row+c*x:row+c*x+c], pix[row+c*(w-1-x):row+c*(w-1-x)+c])
		}
	}
	return out
}

// VAEHooks are TrainVAE's callbacks; each may be nil.
type VAEHooks struct {
	Progress func(step, total int, loss float64)
	Logf     func(format string, args ...any)
}

// VAEResult is what a run did.
type VAEResult struct {
	Steps       int     // steps made (fewer than asked when stopped)
	FirstLoss   float64 // the first logged window's mean loss
	FinalLoss   float64 // the last logged window's mean loss
	FinalMSE    float64 // its reconstruction term alone: the mean squared error in [-1, 1] units
	Seconds     float64 // training time, without loading and saving
	StepsPerSec float64
	// ScalingFactor is 1 / std of the encoder's latent means over
	// ScaleImages training images; LatentMean is their mean, which
	// diffusers' SD 1.x pipelines do not shift away.
	ScalingFactor, LatentMean float64
}

// The files TrainVAE writes beside the model's parts.
const (
	VAELogFile  = "vae_train.csv"
	VAEPlotFile = "vae_loss.png"
	// A decoder-only run logs beside the whole VAE's run, not over it.
	VAEDecoderLogFile  = "vae_decoder_train.csv"
	VAEDecoderPlotFile = "vae_decoder_loss.png"
	vaeDir             = "vae"
	vaeWeights         = "diffusion_pytorch_model"
	vaeConfigFile      = "config.json"
)

// TrainVAE trains the VAE of the diffusers folder modelDir on imgs and
// writes it back: vae/diffusion_pytorch_model.safetensors and the
// scaling_factor of vae/config.json (every other key kept), each replaced
// atomically, plus the loss log and its plot in modelDir. Cancelling ctx
// stops after the step under way; what was trained is still measured and
// saved, and the error wraps context.Cause(ctx).
func TrainVAE(ctx context.Context, modelDir string, imgs *VAEImages, cfg VAEConfig, hooks VAEHooks) (res VAEResult, err error) {
	if err := cfg.Validate(); err != nil {
		return res, err
	}
	if len(imgs.Images) == 0 || len(imgs.Subjects) != len(imgs.Images) {
		return res, fmt.Errorf("train-vae: %d images with %d subject masks (LoadVAEImages makes both)", len(imgs.Images), len(imgs.Subjects))
	}
	m, err := openVAE(modelDir)
	if err != nil {
		return res, err
	}
	defer m.free()
	if f := m.model.Downsampling(); imgs.Images[0].W%f != 0 {
		return res, fmt.Errorf("train-vae: images of %d pixels do not divide into the VAE's latents of %d pixels", imgs.Images[0].W, f)
	}
	logf := func(format string, args ...any) {
		if hooks.Logf != nil {
			hooks.Logf(format, args...)
		}
	}
	part := "VAE"
	if cfg.DecoderOnly {
		part = "VAE's decoder"
		m.freezeEncoder()
	}
	var count int64
	for _, p := range m.params {
		count += p.Numel()
	}
	logf("training the %s of %s: %d parameters on %d images, %d steps of %d", part, modelDir, count, len(imgs.Images), cfg.Steps, cfg.BatchSize)

	var stopped error
	defer torch.Recover(&err)
	torch.WithGrad(func() { res, stopped, err = m.train(ctx, imgs, cfg, hooks) })
	if err != nil {
		return res, err
	}
	if cfg.DecoderOnly {
		// The encoder did not change, nor did its latents' spread.
		res.ScalingFactor = m.model.Config.ScalingFactor
	} else {
		torch.NoGrad(func() { res.ScalingFactor, res.LatentMean = m.scalingFactor(imgs, cfg) })
	}
	if math.IsNaN(res.ScalingFactor) || math.IsInf(res.ScalingFactor, 0) || res.ScalingFactor <= 0 {
		return res, fmt.Errorf("train-vae: the latents' scaling factor is %g: the VAE did not train", res.ScalingFactor)
	}
	if err := m.save(res.ScalingFactor); err != nil {
		return res, err
	}
	logf("scaling factor %.5f (latent mean %.4f); VAE saved in %s", res.ScalingFactor, res.LatentMean, filepath.Join(modelDir, vaeDir))
	if stopped != nil {
		return res, fmt.Errorf("train-vae: stopped after step %d, the VAE so far saved: %w", res.Steps, stopped)
	}
	return res, nil
}

// trainableVAE is a folder's VAE with its parameters by checkpoint key.
type trainableVAE struct {
	dir        string // the model folder
	configJSON map[string]any
	model      *vae.AutoencoderKL
	named      map[string]*torch.Tensor
	keys       []string // sorted: the optimizer's order
	params     []*torch.Tensor
	all        []*torch.Tensor // everything the loader made, for free
}

// openVAE loads modelDir's vae/ with its parameters' names, which
// vae.Load does not hand out. It reads the current diffusers key names
// (those lcpdiff model init writes), not the pre-0.14 attention names.
func openVAE(modelDir string) (*trainableVAE, error) {
	st, err := os.Stat(modelDir)
	if err != nil {
		return nil, fmt.Errorf("train-vae: model folder %s: %w", modelDir, unwrapPath(err))
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("train-vae: %s is not a folder (a diffusers model folder with vae/)", modelDir)
	}
	dir := filepath.Join(modelDir, vaeDir)
	cfgPath := filepath.Join(dir, vaeConfigFile)
	raw, err := os.ReadFile(cfgPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("train-vae: %s has no vae/config.json: not a diffusers model folder with a VAE", modelDir)
	}
	if err != nil {
		return nil, fmt.Errorf("train-vae: %w", err)
	}
	m := &trainableVAE{dir: modelDir}
	if err := json.Unmarshal(raw, &m.configJSON); err != nil {
		return nil, fmt.Errorf("train-vae: %s: %w", cfgPath, err)
	}
	c, err := vae.LoadConfig(cfgPath)
	if err != nil {
		return nil, fmt.Errorf("train-vae: %w", err)
	}
	files, err := nn.OpenWeights(dir, vaeWeights)
	if err != nil {
		return nil, fmt.Errorf("train-vae: %w", err)
	}
	defer files.Close()
	l := nn.NewLoader("vae", files, torch.Options{}) // f32: AdamW's steps vanish in half precision
	if err := torch.Try(func() { m.model = vae.New(l.Root(), c) }); err != nil {
		nn.Free(l.Params())
		return nil, fmt.Errorf("train-vae: %s: %w", dir, err)
	}
	m.all = l.Params()
	if err := l.Err(nil); err != nil {
		m.free()
		return nil, fmt.Errorf("train-vae: %s: %w", dir, err)
	}
	m.named = l.Named()
	for k := range m.named {
		m.keys = append(m.keys, k)
	}
	slices.Sort(m.keys)
	for _, k := range m.keys {
		m.params = append(m.params, m.named[k])
	}
	return m, nil
}

func (m *trainableVAE) free() { nn.Free(m.all) }

// freezeEncoder leaves the decoder's parameters (decoder.*,
// post_quant_conv.*) as the ones to train.
func (m *trainableVAE) freezeEncoder() {
	m.keys = slices.DeleteFunc(m.keys, func(k string) bool {
		return !strings.HasPrefix(k, "decoder.") && !strings.HasPrefix(k, "post_quant_conv.")
	})
	m.params = m.params[:0]
	for _, k := range m.keys {
		m.params = append(m.params, m.named[k])
	}
}

// train runs the steps. It returns the cause when ctx stopped it early,
// as stopped, beside the result so far.
func (m *trainableVAE) train(ctx context.Context, imgs *VAEImages, cfg VAEConfig, hooks VAEHooks) (res VAEResult, stopped, err error) {
	for _, p := range m.params {
		p.SetRequiresGrad(true)
	}
	defer func() {
		for _, p := range m.params {
			p.ZeroGrad()
			p.SetRequiresGrad(false)
		}
	}()
	opt := torch.NewAdamW(m.params, torch.DefaultAdamW(cfg.LR))
	defer opt.Close()
	gen := torch.NewGenerator(cfg.Seed)
	defer gen.Close()
	// The batches' own stream, so that the posterior noise does not shift
	// which images a step sees.
	pick := rand.New(rand.NewPCG(cfg.Seed, 0x7661652d64617461))

	var rows []LogRow
	type window struct {
		steps         int
		loss, mse, gn float64
		start         time.Time
	}
	w := window{start: time.Now()}
	start := time.Now()
	for step := 1; step <= cfg.Steps; step++ {
		if ctx.Err() != nil {
			stopped = context.Cause(ctx)
			break
		}
		lr := cfg.lrAt(step)
		opt.SetLR(lr)
		batch := m.batch(imgs, cfg, pick)
		loss, mse, gradNorm, err := m.step(batch, cfg, opt, gen)
		if err != nil {
			return res, nil, fmt.Errorf("train-vae: step %d: %w", step, err)
		}
		res.Steps = step
		w.steps++
		w.loss += loss
		w.mse += mse
		w.gn += gradNorm
		if hooks.Progress != nil {
			hooks.Progress(step, cfg.Steps, loss)
		}
		if step%cfg.LogEvery == 0 || step == cfg.Steps {
			n, secs := float64(w.steps), time.Since(w.start).Seconds()
			rows = append(rows, LogRow{
				Step: step, Loss: w.loss / n, LR: lr, GradNorm: w.gn / n, Seconds: time.Since(start).Seconds(),
				StepsPerSec: n / secs, SamplesPerSec: n * float64(cfg.BatchSize) / secs,
			})
			res.FinalLoss, res.FinalMSE = w.loss/n, w.mse/n
			w = window{start: time.Now()}
		}
	}
	res.Seconds = time.Since(start).Seconds()
	if res.Steps > 0 {
		res.StepsPerSec = float64(res.Steps) / res.Seconds
	}
	if w.steps > 0 { // stopped between two log rows
		res.FinalLoss, res.FinalMSE = w.loss/float64(w.steps), w.mse/float64(w.steps)
	}
	if len(rows) > 0 {
		res.FirstLoss = rows[0].Loss
	}
	if err := m.writeLog(rows, cfg.DecoderOnly); err != nil {
		return res, nil, err
	}
	return res, stopped, nil
}

// vaeBatch is one step's images and their subject masks.
type vaeBatch struct {
	images   []*data.RGB
	subjects []*data.Gray
}

// batch draws BatchSize images (with replacement), half of them mirrored
// when cfg.Flip.
func (m *trainableVAE) batch(imgs *VAEImages, cfg VAEConfig, r *rand.Rand) vaeBatch {
	b := vaeBatch{images: make([]*data.RGB, cfg.BatchSize), subjects: make([]*data.Gray, cfg.BatchSize)}
	for i := range b.images {
		k := r.IntN(len(imgs.Images))
		img, mask := imgs.Images[k], imgs.Subjects[k]
		if cfg.Flip && r.IntN(2) == 1 {
			img, mask = flipped(img), flippedMask(mask)
		}
		b.images[i], b.subjects[i] = img, mask
	}
	return b
}

// step is one optimizer step on b; it returns the loss, the plain mean
// squared error of the reconstructions and the gradient norm before
// clipping.
func (m *trainableVAE) step(b vaeBatch, cfg VAEConfig, opt *torch.AdamW, gen *torch.Generator) (loss, mse, gradNorm float64, err error) {
	s := torch.NewScope()
	defer s.Close()
	opt.ZeroGrad()
	x := imageTensor(b.images...)
	weights := pixelWeights(b.subjects, cfg.SubjectWeight)
	total, plain := m.loss(x, weights, cfg.KLWeight, gen)
	loss, mse = total.Item(), plain.Item()
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		// Stepping on it would spread the NaN into every weight.
		return 0, 0, 0, fmt.Errorf("the loss is %g", loss)
	}
	total.Backward()
	gradNorm = clipGradNorm(m.params, cfg.ClipGradNorm)
	opt.Step()
	return loss, mse, gradNorm, nil
}

// pixelWeights is 1 + subjectWeight inside the masks and 1 outside,
// [B, 1, H, W], scaled to mean 1 over the batch so that the weighted error
// stays on the scale of a plain MSE.
func pixelWeights(masks []*data.Gray, subjectWeight float64) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		return subjectWeights(masksTensor(masks...), subjectWeight)
	})
}

// loss is the weighted squared error of the decoded posterior sample
// (weights [B, 1, H, W] of mean 1) plus klWeight times the KL divergence,
// both per image summed over its values and then divided by the number of
// pixel values, so the first term reads as a per-pixel MSE and the ratio of
// the two is the LDM recipe's. It also returns the plain, unweighted MSE.
func (m *trainableVAE) loss(x, weights *torch.Tensor, klWeight float64, gen *torch.Generator) (total, plain *torch.Tensor) {
	s := torch.NewScope()
	defer s.Close()
	mean, logvar := m.model.Encode(x)
	z := vae.Sample(mean, logvar, gen)
	sq := m.model.Decode(z).Sub(x).Square()
	rec := sq.Mul(weights).Mean()
	values := float64(x.Numel() / x.Size(0)) // per image
	// KL(N(mean, var) || N(0, 1)) summed over a latent, averaged over the batch.
	kl := mean.Square().Add(logvar.Exp()).SubScalar(1).Sub(logvar).Sum().MulScalar(0.5 / float64(x.Size(0)))
	total = rec.Add(kl.MulScalar(klWeight / values))
	return s.Keep(total), s.Keep(sq.Detach().Mean())
}

// scalingFactor is 1 / std of the latent means of ScaleImages training
// images (a fixed spread of them), and their mean.
func (m *trainableVAE) scalingFactor(imgs *VAEImages, cfg VAEConfig) (factor, mean float64) {
	n := min(cfg.ScaleImages, len(imgs.Images))
	var sum, sumSq, count float64
	for i := 0; i < n; i += 32 {
		var chunk []*data.RGB
		for j := i; j < min(i+32, n); j++ {
			// Spread over the whole set, not its first clips.
			chunk = append(chunk, imgs.Images[j*len(imgs.Images)/n])
		}
		v := torch.Scoped(func() *torch.Tensor {
			mean, _ := m.model.Encode(imageTensor(chunk...))
			return mean.To(torch.Float64)
		})
		for _, x := range v.Float64s() {
			sum += x
			sumSq += x * x
			count++
		}
		v.Free()
	}
	mean = sum / count
	// The sample std (n - 1), as torch.std computes it.
	variance := (sumSq - count*mean*mean) / (count - 1)
	return 1 / math.Sqrt(variance), mean
}

// save writes the weights, then the config with the new scaling factor,
// each through a temporary file renamed into place.
func (m *trainableVAE) save(scalingFactor float64) error {
	dir := filepath.Join(m.dir, vaeDir)
	weights := filepath.Join(dir, vaeWeights+".safetensors")
	if err := torch.SaveSafetensors(weights, m.named, map[string]string{"format": "pt"}); err != nil {
		return fmt.Errorf("train-vae: %w", err)
	}
	m.configJSON["scaling_factor"] = scalingFactor
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m.configJSON); err != nil {
		return fmt.Errorf("train-vae: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, vaeConfigFile), b.Bytes()); err != nil {
		return fmt.Errorf("train-vae: %w", err)
	}
	return atomicfile.SyncDir(dir)
}

// writeLog writes the loss log and its plot into the model folder.
func (m *trainableVAE) writeLog(rows []LogRow, decoderOnly bool) error {
	if len(rows) == 0 {
		return nil
	}
	logFile, plotFile := VAELogFile, VAEPlotFile
	if decoderOnly {
		logFile, plotFile = VAEDecoderLogFile, VAEDecoderPlotFile
	}
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	w.Write(logHeader)
	for _, r := range rows {
		w.Write(r.record())
	}
	w.Flush()
	if err := atomicfile.WriteFile(filepath.Join(m.dir, logFile), b.Bytes()); err != nil {
		return fmt.Errorf("train-vae: log: %w", err)
	}
	if err := writePlot(filepath.Join(m.dir, plotFile), rows); err != nil {
		return fmt.Errorf("train-vae: plot: %w", err)
	}
	return nil
}

// VAEEval is how well a VAE reconstructs a set of images.
type VAEEval struct {
	Images int
	// PSNR is 10 log10(255^2 / MSE) over every 8-bit value of the
	// reconstructions (posterior mean, decoded, rounded) against the
	// originals; SubjectPSNR the same inside the subjects' masks only,
	// where the toy world's shapes and textures are.
	PSNR, SubjectPSNR float64
}

// EvaluateVAE reconstructs imgs with modelDir's saved VAE, loaded by the
// project's own loader as generation loads it, and, when sheetPath is not
// empty, writes a PNG of sheet scenes (one image per record, spread over
// the set) side by side: originals above, reconstructions below, at twice
// their size.
func EvaluateVAE(modelDir string, imgs *VAEImages, sheetPath string, sheet int) (ev VAEEval, err error) {
	if len(imgs.Images) == 0 || len(imgs.Subjects) != len(imgs.Images) {
		return ev, fmt.Errorf("train-vae: %d images with %d subject masks (LoadVAEImages makes both)", len(imgs.Images), len(imgs.Subjects))
	}
	m, err := vae.Load(filepath.Join(modelDir, vaeDir), torch.Options{})
	if err != nil {
		return ev, fmt.Errorf("train-vae: %w", err)
	}
	defer m.Free()
	defer torch.Recover(&err)
	recon := make([]*image.RGBA, len(imgs.Images))
	var sqErr, values, subjErr, subjValues float64
	for i := 0; i < len(imgs.Images); i += 16 {
		chunk := imgs.Images[i:min(i+16, len(imgs.Images))]
		var out *torch.Tensor
		torch.NoGrad(func() {
			out = torch.Scoped(func() *torch.Tensor { return m.Reconstruct(imageTensor(chunk...)) })
		})
		rgba, err := pipeline.Images(out)
		out.Free()
		if err != nil {
			return ev, fmt.Errorf("train-vae: %w", err)
		}
		for j, img := range rgba {
			recon[i+j] = img
			orig, subjects := chunk[j], imgs.Subjects[i+j]
			for p := range orig.W * orig.H {
				for c := range 3 {
					d := float64(orig.Pix[3*p+c]) - float64(img.Pix[4*p+c])
					sqErr += d * d
					if subjects.Pix[p] != 0 {
						subjErr += d * d
						subjValues++
					}
				}
			}
			values += float64(3 * orig.W * orig.H)
		}
	}
	ev.Images = len(imgs.Images)
	psnr := func(sq, n float64) float64 { return 10 * math.Log10(255*255/math.Max(sq/max(n, 1), 1e-12)) }
	ev.PSNR, ev.SubjectPSNR = psnr(sqErr, values), psnr(subjErr, subjValues)
	if sheetPath != "" && sheet > 0 {
		if err := writeReconSheet(sheetPath, imgs, recon, sheet); err != nil {
			return ev, err
		}
	}
	return ev, nil
}

// writeReconSheet draws n originals over their reconstructions.
func writeReconSheet(path string, imgs *VAEImages, recon []*image.RGBA, n int) error {
	n = min(n, len(imgs.Firsts))
	const zoom = 2
	w, h := imgs.Images[0].W, imgs.Images[0].H
	sheet := image.NewRGBA(image.Rect(0, 0, n*w*zoom, 2*h*zoom))
	for k := range n {
		i := imgs.Firsts[k*len(imgs.Firsts)/n]
		orig, rec := imgs.Images[i], recon[i]
		for y := range h * zoom {
			for x := range w * zoom {
				sp := (y/zoom)*w + x/zoom
				o := sheet.PixOffset(k*w*zoom+x, y)
				copy(sheet.Pix[o:o+3], orig.Pix[3*sp:3*sp+3])
				sheet.Pix[o+3] = 255
				o = sheet.PixOffset(k*w*zoom+x, h*zoom+y)
				copy(sheet.Pix[o:o+4], rec.Pix[4*sp:4*sp+4])
			}
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, sheet); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, b.Bytes()); err != nil {
		return fmt.Errorf("train-vae: %w", err)
	}
	return nil
}

// unwrapPath drops the *os.PathError wrapper (its path is already in the
// message).
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
