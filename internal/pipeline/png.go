package pipeline

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"image"
	"image/png"
	"os"
	"strings"

	"github.com/lcpdiff/lcpdiff/internal/atomicfile"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Images converts a batch of images [B, 3, H, W] with values in [0, 1] to
// RGBA images, rounding as diffusers' numpy_to_pil does ((x * 255).round()).
func Images(x *torch.Tensor) ([]*image.RGBA, error) {
	var out []*image.RGBA
	err := torch.Try(func() {
		s := torch.NewScope()
		defer s.Close()
		shape := x.Shape()
		if len(shape) != 4 || shape[1] != 3 {
			panic(&torch.Error{Op: "images", Inputs: x.String(), Msg: "want [B, 3, H, W]"})
		}
		b, h, w := int(shape[0]), int(shape[2]), int(shape[3])
		// [B, H, W, 3] bytes
		px := torch.Data[uint8](x.To(torch.Float32).Clamp(0, 1).MulScalar(255).Round().Permute(0, 2, 3, 1).Contiguous().To(torch.Uint8))
		for i := range b {
			img := image.NewRGBA(image.Rect(0, 0, w, h))
			src := px[i*h*w*3 : (i+1)*h*w*3]
			for p := range h * w {
				img.Pix[4*p], img.Pix[4*p+1], img.Pix[4*p+2], img.Pix[4*p+3] = src[3*p], src[3*p+1], src[3*p+2], 255
			}
			out = append(out, img)
		}
	})
	return out, err
}

// Parameters is what an image was made with, written into its PNG as the
// "parameters" text chunk in the AUTOMATIC1111 format, which image viewers,
// web UIs and stable-diffusion.cpp read back.
type Parameters struct {
	Prompt, NegativePrompt string
	Steps                  int
	Sampler                string
	CFGScale               float64
	Seed                   uint64
	Width, Height          int
	Model                  string
	Extra                  [][2]string // further "Key: value" pairs, in order
}

// String is the A1111 text: the prompt, "Negative prompt: ...", then one
// line of comma-separated "Key: value" pairs.
func (p Parameters) String() string {
	var b strings.Builder
	b.WriteString(p.Prompt)
	if p.NegativePrompt != "" {
		b.WriteString("\nNegative prompt: " + p.NegativePrompt)
	}
	pairs := [][2]string{
		{"Steps", fmt.Sprint(p.Steps)},
		{"Sampler", p.Sampler},
		{"CFG scale", fmt.Sprint(p.CFGScale)},
		{"Seed", fmt.Sprint(p.Seed)},
		{"Size", fmt.Sprintf("%dx%d", p.Width, p.Height)},
	}
	if p.Model != "" {
		pairs = append(pairs, [2]string{"Model", p.Model})
	}
	pairs = append(pairs, p.Extra...)
	pairs = append(pairs, [2]string{"Version", "lcpdiff"})
	b.WriteString("\n")
	for i, kv := range pairs {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(kv[0] + ": " + kv[1])
	}
	return b.String()
}

// WritePNG writes img with a "parameters" text chunk to path, through a
// temporary file renamed into place, so a failed or interrupted write never
// leaves a half image under the real name.
func WritePNG(path string, img image.Image, parameters string) (err error) {
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	data, err := withTextChunk(buf.Bytes(), "parameters", parameters)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := atomicfile.WriteFile(path, data); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// withTextChunk inserts a text chunk right after IHDR. Like Pillow's
// PngInfo.add_text, it writes tEXt when the text is Latin-1 and an
// uncompressed UTF-8 iTXt otherwise.
func withTextChunk(pngData []byte, keyword, text string) ([]byte, error) {
	const sigLen, ihdrLen = 8, 8 + 13 + 4
	if len(pngData) < sigLen+ihdrLen || string(pngData[12:16]) != "IHDR" {
		return nil, fmt.Errorf("not a PNG stream")
	}
	kind, body := "tEXt", []byte(nil)
	if latin1, ok := toLatin1(text); ok {
		body = append(append([]byte(keyword), 0), latin1...)
	} else {
		kind = "iTXt"
		// keyword, NUL, compression flag 0, method 0, empty language tag and translated keyword
		body = append(append([]byte(keyword), 0, 0, 0, 0, 0), text...)
	}
	chunk := make([]byte, 0, len(body)+12)
	chunk = binary.BigEndian.AppendUint32(chunk, uint32(len(body)))
	chunk = append(chunk, kind...)
	chunk = append(chunk, body...)
	chunk = binary.BigEndian.AppendUint32(chunk, crc32.ChecksumIEEE(chunk[4:]))
	at := sigLen + ihdrLen
	out := append([]byte{}, pngData[:at]...)
	out = append(out, chunk...)
	return append(out, pngData[at:]...), nil
}

func toLatin1(s string) ([]byte, bool) {
	b := make([]byte, 0, len(s))
	for _, r := range s {
		if r > 0xff {
			return nil, false
		}
		b = append(b, byte(r))
	}
	return b, true
}

// ReadParameters returns the "parameters" text of a PNG written by WritePNG
// (or by any tool that writes the A1111 chunk), and whether there is one.
func ReadParameters(path string) (string, bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", false, err
	}
	if len(data) < 8 || !bytes.Equal(data[:8], []byte("\x89PNG\r\n\x1a\n")) {
		return "", false, fmt.Errorf("%s: not a PNG file", path)
	}
	for p := 8; p+12 <= len(data); {
		n := int(binary.BigEndian.Uint32(data[p:]))
		if n < 0 || p+12+n > len(data) {
			return "", false, fmt.Errorf("%s: truncated chunk", path)
		}
		kind, body := string(data[p+4:p+8]), data[p+8:p+8+n]
		switch kind {
		case "tEXt":
			if k, v, ok := bytes.Cut(body, []byte{0}); ok && string(k) == "parameters" {
				r := make([]rune, len(v))
				for i, c := range v {
					r[i] = rune(c)
				}
				return string(r), true, nil
			}
		case "iTXt":
			if k, v, ok := bytes.Cut(body, []byte{0}); ok && string(k) == "parameters" && len(v) >= 2 && v[0] == 0 {
				// skip compression method, language tag and translated keyword
				rest := v[2:]
				for range 2 {
					if _, after, ok := bytes.Cut(rest, []byte{0}); ok {
						rest = after
					}
				}
				return string(rest), true, nil
			}
		case "IEND":
			return "", false, nil
		}
		p += 12 + n
	}
	return "", false, nil
}
