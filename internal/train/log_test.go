package train

import (
	"image/color"
	"math"
	"os"
	"path/filepath"
	"testing"
)

func TestLogResumeDropsLaterRows(t *testing.T) {
	dir := t.TempDir()
	l, err := openLog(dir, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	for step := 1; step <= 5; step++ {
		if err := l.append(LogRow{Step: step, Loss: 1 / float64(step), LR: 5e-5, Seconds: float64(step)}); err != nil {
			t.Fatal(err)
		}
	}
	l.close()
	// Resuming from the checkpoint of step 3 forgets steps 4 and 5.
	l, err = openLog(dir, 3, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.append(LogRow{Step: 4, Loss: 0.2}); err != nil {
		t.Fatal(err)
	}
	l.close()
	rows, err := ReadLog(filepath.Join(dir, LogFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 4 || rows[2].Loss != 1.0/3 || rows[3].Loss != 0.2 || rows[0].LR != 5e-5 {
		t.Errorf("rows after resume: %+v", rows)
	}
}

func TestReadLogRejectsOtherFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.csv")
	os.WriteFile(path, []byte("a,b\n1,2\n"), 0o644)
	if _, err := ReadLog(path); err == nil {
		t.Error("read a file that is not a training log")
	}
}

func TestPlotDrawsTheCurve(t *testing.T) {
	var rows []LogRow
	for step := 1; step <= 200; step++ {
		rows = append(rows, LogRow{Step: step, Loss: 0.1 + 1/float64(step)})
	}
	rows[50].Loss = math.NaN() // a diverged step must not break the plot
	img := plotLoss(rows)
	count := map[color.RGBA]int{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			count[img.RGBAAt(x, y)]++
		}
	}
	if count[plotRaw] < 200 || count[plotSmooth] < 200 || count[plotAxes] < 500 {
		t.Errorf("pixels: raw %d, smooth %d, axes and labels %d", count[plotRaw], count[plotSmooth], count[plotAxes])
	}
	// The raw curve starts at the top left corner of the plot area.
	if c := img.RGBAAt(marginLeft, marginTop); c != plotRaw {
		t.Errorf("the first, highest point is not at the top left: %v there", c)
	}
	// Empty and flat logs draw too.
	plotLoss(nil)
	plotLoss([]LogRow{{Step: 3, Loss: 1}})
	if err := writePlot(filepath.Join(t.TempDir(), PlotFile), rows); err != nil {
		t.Fatal(err)
	}
}
