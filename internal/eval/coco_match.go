package eval

import (
	"slices"
	"sort"
)

// cell is one (image, category) pair of COCOeval: the two lists its
// _prepare step builds, and the IoUs its computeIoU step caches.
type cell struct {
	gts []GroundTruth // in input order
	// dets are sorted by score and cut to the largest maxDets (100) before
	// anything else: a detection beyond the 100th of its image and
	// category is never seen, not even as a false positive.
	dets []Detection
	ious [][]float64 // [detection][ground truth]
}

// group sorts the boxes into cells, indexed k*len(imageIDs)+i, nil where
// an image has neither ground truth nor detections of a category; boxes
// of other images or categories are dropped.
func group(gts []GroundTruth, dets []Detection, imageIDs, categoryIDs []int) []*cell {
	imageIndex := indexOf(imageIDs)
	categoryIndex := indexOf(categoryIDs)
	cells := make([]*cell, len(imageIDs)*len(categoryIDs))
	at := func(imageID, categoryID int) *cell {
		i, ok1 := imageIndex[imageID]
		k, ok2 := categoryIndex[categoryID]
		if !ok1 || !ok2 {
			return nil
		}
		c := &cells[k*len(imageIDs)+i]
		if *c == nil {
			*c = &cell{}
		}
		return *c
	}
	for _, g := range gts {
		if c := at(g.ImageID, g.CategoryID); c != nil {
			c.gts = append(c.gts, g)
		}
	}
	for _, d := range dets {
		if c := at(d.ImageID, d.CategoryID); c != nil {
			c.dets = append(c.dets, d)
		}
	}
	maxDet := maxDetections[len(maxDetections)-1]
	for _, c := range cells {
		if c == nil {
			continue
		}
		slices.SortStableFunc(c.dets, func(a, b Detection) int { return byScore(a.Score, b.Score) })
		c.dets = c.dets[:min(len(c.dets), maxDet)]
		c.ious = make([][]float64, len(c.dets))
		for d, det := range c.dets {
			c.ious[d] = make([]float64, len(c.gts))
			for g, gt := range c.gts {
				c.ious[d][g] = boxIoU(det.Box, gt.Box, gt.IsCrowd)
			}
		}
	}
	return cells
}

func indexOf(ids []int) map[int]int {
	m := make(map[int]int, len(ids))
	for i, id := range ids {
		m[id] = i
	}
	return m
}

// boxIoU is bbIou of pycocotools' maskApi.c for one pair of [x, y, w, h]
// boxes, operation for operation. For a crowd ground truth the union is
// the detection's area alone, so a detection lying inside a crowd region
// scores 1 however small it is.
func boxIoU(dt, gt [4]float64, crowd bool) float64 {
	w := min(dt[2]+dt[0], gt[2]+gt[0]) - max(dt[0], gt[0])
	if w <= 0 {
		return 0
	}
	h := min(dt[3]+dt[1], gt[3]+gt[1]) - max(dt[1], gt[1])
	if h <= 0 {
		return 0
	}
	// The conversions keep each product rounded on its own (no FMA), as
	// the C code compiled for x86-64 rounds it.
	inter := float64(w * h)
	da := float64(dt[2] * dt[3])
	if crowd {
		return inter / da
	}
	ga := float64(gt[2] * gt[3])
	return inter / (da + ga - inter)
}

// imageResult is COCOeval.evaluateImg's output for one cell and area
// range: per IoU threshold and detection, whether the detection matched
// and whether it is ignored.
type imageResult struct {
	scores  []float64 // descending, at most 100
	matched [numIoU][]bool
	ignored [numIoU][]bool
	numGT   int // ground truths not ignored: the recall's denominator
}

// evaluate is COCOeval.evaluateImg with maxDet 100 for the area range
// [lo, hi]. A ground truth is ignored when it is a crowd or its Area lies
// outside the range; an unmatched detection is ignored when its own area
// (w*h) lies outside, so the range limits false positives too.
func (c *cell) evaluate(rng [2]float64) *imageResult {
	lo, hi := rng[0], rng[1]
	outside := func(area float64) bool { return area < lo || area > hi }

	// pycocotools sets "ignore" from iscrowd alone, overwriting any
	// "ignore" field of the annotation, so there is no separate flag here.
	ignore := make([]bool, len(c.gts))
	for j, g := range c.gts {
		area := g.Area
		if area == 0 {
			area = g.Box[2] * g.Box[3]
		}
		ignore[j] = g.IsCrowd || outside(area)
	}
	// Ground truths are visited non-ignored first, each group in input
	// order (a stable argsort of the flags).
	order := allIndices(len(c.gts))
	slices.SortStableFunc(order, func(a, b int) int { return b1(ignore[a]) - b1(ignore[b]) })

	res := &imageResult{scores: make([]float64, len(c.dets))}
	for d, det := range c.dets {
		res.scores[d] = det.Score
	}
	for _, j := range order {
		if !ignore[j] {
			res.numGT++
		}
	}
	for t, thr := range iouThresholds {
		res.matched[t] = make([]bool, len(c.dets))
		res.ignored[t] = make([]bool, len(c.dets))
		taken := make([]bool, len(c.gts)) // by input index
		for d := range c.dets {
			// The best match so far: the last ground truth, in visiting
			// order, with the highest IoU >= thr (ties go to the later
			// one because only a smaller IoU is skipped). The cap at
			// 1-1e-10 lets a threshold of 1 match a perfect overlap.
			best, m := min(thr, 1-1e-10), -1
			for _, j := range order {
				// A crowd ground truth can absorb any number of
				// detections.
				if taken[j] && !c.gts[j].IsCrowd {
					continue
				}
				// Once a regular ground truth matched, the ignored ones
				// (all later in the order) cannot take the detection.
				if m >= 0 && !ignore[m] && ignore[j] {
					break
				}
				if c.ious[d][j] < best {
					continue
				}
				best, m = c.ious[d][j], j
			}
			if m < 0 {
				res.ignored[t][d] = outside(c.dets[d].Box[2] * c.dets[d].Box[3])
				continue
			}
			res.matched[t][d] = true
			res.ignored[t][d] = ignore[m]
			taken[m] = true
		}
	}
	return res
}

// eps is np.spacing(1), which COCOeval adds to precision's denominator:
// a precision of 1 is stored as 1/(1+eps) = 0.9999999999999998.
const eps = 0x1p-52

// accumulate is one (k, a, m) iteration of COCOeval.accumulate: pool the
// first maxDet detections of every image, rank them by score, and record
// the final recall and the interpolated precision at each recall
// threshold. It leaves -1 when no ground truth of the category is
// non-ignored in the area range.
func (e *Evaluation) accumulate(k, a, m int, images []*imageResult, maxDet int) {
	type ranked struct{ image, det int }
	var pool []ranked
	var scores []float64
	numGT := 0
	for i, im := range images {
		if im == nil {
			continue
		}
		numGT += im.numGT
		for d := range min(maxDet, len(im.scores)) {
			pool = append(pool, ranked{i, d})
			scores = append(scores, im.scores[d])
		}
	}
	if numGT == 0 {
		return
	}
	// A stable sort of the pool, which is in image-ID order: score ties
	// across images go to the lower image ID.
	order := allIndices(len(pool))
	slices.SortStableFunc(order, func(x, y int) int { return byScore(scores[x], scores[y]) })

	nd := len(order)
	rc := make([]float64, nd)
	pr := make([]float64, nd)
	K := len(e.CategoryIDs)
	for t := range numIoU {
		tp, fp := 0, 0
		for i, o := range order {
			p := pool[o]
			im := images[p.image]
			if !im.ignored[t][p.det] {
				if im.matched[t][p.det] {
					tp++
				} else {
					fp++
				}
			}
			rc[i] = float64(tp) / float64(numGT)
			pr[i] = float64(tp) / (float64(tp+fp) + eps)
		}
		final := 0.0
		if nd > 0 {
			final = rc[nd-1]
		}
		e.recall[((t*K+k)*numArea+a)*numMaxDet+m] = final

		// The precision envelope: the best precision at this or any
		// higher recall.
		for i := nd - 1; i > 0; i-- {
			pr[i-1] = max(pr[i-1], pr[i])
		}
		// np.searchsorted(rc, recThrs, side="left"): the first rank whose
		// recall reaches the threshold. Thresholds beyond the final
		// recall keep precision 0 (pycocotools stops at the IndexError).
		for r, thr := range recallThresholds {
			q := 0.0
			if i := sort.SearchFloat64s(rc, thr); i < nd {
				q = pr[i]
			}
			e.precision[(((t*numRecall+r)*K+k)*numArea+a)*numMaxDet+m] = q
		}
	}
}
