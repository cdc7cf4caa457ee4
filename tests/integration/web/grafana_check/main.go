// grafana-dashboard-check: strict check of dashboard JSON models against Grafana's dashboard schema.
//
// The schema is the one Grafana publishes through its foundation SDK (types generated from the
// dashboard kind): decoding is strict (unknown fields, wrong types and missing required fields
// are errors), then the schema's constraints are checked. Panels of type "timeseries" have their
// options and field config checked too, and Prometheus targets their query fields.
//
// Usage: grafana-dashboard-check FILE...   (exit 0: every file is valid; 1: a file is not).
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: grafana-dashboard-check FILE...")
		os.Exit(2)
	}
	runtime := cog.NewRuntime()
	runtime.RegisterPanelcfgVariant(timeseries.VariantConfig())
	runtime.RegisterDataqueryVariant(prometheus.VariantConfig())
	invalid := false
	for _, path := range os.Args[1:] {
		raw, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			os.Exit(2)
		}
		var dash dashboard.Dashboard
		if err := failed(dash.UnmarshalJSONStrict(raw)); err != nil {
			fmt.Printf("%s: INVALID (decoding): %v\n", path, err)
			invalid = true
			continue
		}
		if err := failed(dash.Validate()); err != nil {
			fmt.Printf("%s: INVALID (constraints): %v\n", path, err)
			invalid = true
			continue
		}
		fmt.Printf("%s: OK (%d panels)\n", path, len(dash.Panels))
	}
	if invalid {
		os.Exit(1)
	}
}

// failed is nil when err holds no error. The SDK returns its error list as an error even when the
// list is empty (a nil slice in a non-nil interface), so "err != nil" alone is not enough.
func failed(err error) error {
	var list cog.BuildErrors
	if errors.As(err, &list) && len(list) == 0 {
		return nil
	}
	return err
}
