package data

// JPEG is decoded by libjpeg-turbo itself because Go's image/jpeg rounds
// differently (IDCT and chroma upsampling) and disagrees with Pillow on
// about a third of a photo's values. The build needs libjpeg's headers and
// library, Debian's libjpeg-dev (libjpeg62-turbo-dev, the libjpeg-turbo that
// Debian's Pillow links): scripts/fetch-libtorch.sh installs it with the
// shim's other build tools, on CI too.

/*
#cgo LDFLAGS: -ljpeg
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <jpeglib.h>
#include <jerror.h>

// libjpeg reports a fatal error by calling error_exit, which by default
// exits the process. This handler jumps back to the decode call instead, so
// a corrupt file becomes an error message.
struct lcp_jpeg_error {
	struct jpeg_error_mgr pub;
	jmp_buf jump;
	int truncated;
	char msg[JMSG_LENGTH_MAX];
};

static void lcp_jpeg_error_exit(j_common_ptr cinfo) {
	struct lcp_jpeg_error *e = (struct lcp_jpeg_error *)cinfo->err;
	e->pub.format_message(cinfo, e->msg);
	longjmp(e->jump, 1);
}

// Warnings (corrupt data that libjpeg can skip) are silent, as in Pillow,
// except running out of data: Pillow refuses a truncated file.
static void lcp_jpeg_emit_message(j_common_ptr cinfo, int level) {
	struct lcp_jpeg_error *e = (struct lcp_jpeg_error *)cinfo->err;
	if (level < 0 && e->pub.msg_code == JWRN_JPEG_EOF) {
		e->truncated = 1;
	}
}

// lcp_jpeg_decode decodes a JPEG file held in memory to 8-bit RGB rows in a
// buffer it mallocs (*pix, the caller frees it), with the decompression
// parameters Pillow leaves at libjpeg's defaults: islow IDCT, fancy
// upsampling, block smoothing. It returns 0, or 1 with a message in msg.
static int lcp_jpeg_decode(const unsigned char *data, unsigned long size, long long max_pixels,
                           unsigned char **pix, int *w, int *h, char *msg, size_t msg_len) {
	struct jpeg_decompress_struct cinfo;
	struct lcp_jpeg_error err;
	unsigned char *volatile out = NULL;

	memset(&cinfo, 0, sizeof cinfo);
	memset(&err, 0, sizeof err);
	cinfo.err = jpeg_std_error(&err.pub);
	err.pub.error_exit = lcp_jpeg_error_exit;
	err.pub.emit_message = lcp_jpeg_emit_message;
	if (setjmp(err.jump)) {
		jpeg_destroy_decompress(&cinfo);
		free(out);
		// Out of data, libjpeg goes on with a made-up end marker and may
		// fail later for want of what followed: the truncation is the cause.
		snprintf(msg, msg_len, "%s", err.truncated ? "file is truncated" : err.msg);
		return 1;
	}
	jpeg_create_decompress(&cinfo);
	jpeg_mem_src(&cinfo, data, size);
	jpeg_read_header(&cinfo, TRUE);
	switch (cinfo.jpeg_color_space) {
	case JCS_GRAYSCALE: // replicated to R, G and B, as Pillow's convert("RGB") does
	case JCS_YCbCr:
	case JCS_RGB:
		break;
	default:
		jpeg_destroy_decompress(&cinfo);
		snprintf(msg, msg_len, "CMYK JPEG files are not supported");
		return 1;
	}
	if ((long long)cinfo.image_width * cinfo.image_height > max_pixels) {
		jpeg_destroy_decompress(&cinfo);
		snprintf(msg, msg_len, "%ux%u pixels is more than %lld", cinfo.image_width, cinfo.image_height, max_pixels);
		return 1;
	}
	cinfo.out_color_space = JCS_RGB;
	jpeg_start_decompress(&cinfo);
	size_t stride = (size_t)cinfo.output_width * 3;
	out = malloc(stride * cinfo.output_height);
	if (out == NULL) {
		jpeg_destroy_decompress(&cinfo);
		snprintf(msg, msg_len, "out of memory for %ux%u pixels", cinfo.output_width, cinfo.output_height);
		return 1;
	}
	while (cinfo.output_scanline < cinfo.output_height) {
		JSAMPROW row = out + cinfo.output_scanline * stride;
		jpeg_read_scanlines(&cinfo, &row, 1);
	}
	jpeg_finish_decompress(&cinfo); // reads up to the end marker, which may be missing
	*w = (int)cinfo.output_width;
	*h = (int)cinfo.output_height;
	jpeg_destroy_decompress(&cinfo);
	if (err.truncated) {
		free(out);
		snprintf(msg, msg_len, "file is truncated");
		return 1;
	}
	*pix = out;
	return 0;
}
*/
import "C"

import (
	"errors"
	"unsafe"
)

// decodeJPEG decodes a whole JPEG file to RGB.
func decodeJPEG(b []byte) (*RGB, error) {
	var pix *C.uchar
	var w, h C.int
	var msg [C.JMSG_LENGTH_MAX]C.char
	if C.lcp_jpeg_decode((*C.uchar)(unsafe.Pointer(unsafe.SliceData(b))), C.ulong(len(b)), maxImagePixels,
		&pix, &w, &h, &msg[0], C.size_t(len(msg))) != 0 {
		return nil, errors.New("jpeg: " + C.GoString(&msg[0]))
	}
	defer C.free(unsafe.Pointer(pix))
	m := NewRGB(int(w), int(h))
	copy(m.Pix, unsafe.Slice((*uint8)(unsafe.Pointer(pix)), len(m.Pix)))
	return m, nil
}
