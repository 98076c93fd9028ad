package main

import (
	"fmt"
	"time"

	"github.com/hashicorp/cronexpr"
)

// CronInput is the request of the `cron` sub-command: a job's periodic block (api.PeriodicConfig's Spec,
// Specs and TimeZone) and the instant to look after (Unix seconds).
type CronInput struct {
	Spec     string
	Specs    []string
	TimeZone string
	From     int64
}

// CronOutput: the next launch (Unix seconds; 0 when no instant matches), or Error as the server's job
// validation words a spec it refuses ("Invalid cron spec ...") or a time zone it cannot load.
type CronOutput struct {
	Next  int64  `json:",omitempty"`
	Time  string `json:",omitempty"` // Next as Go's JSON writes a time.Time in the block's zone (the plan's NextPeriodicLaunch)
	Error string `json:",omitempty"`
}

// Cron is what Nomad's periodic dispatcher asks of a job's periodic block: the first launch after From,
// in the block's time zone, with hashicorp/cronexpr (the library Nomad's api and server use). A single
// Spec wins over Specs; with Specs the earliest next instant of them all.
func Cron(in CronInput) (out CronOutput) {
	defer func() {
		if r := recover(); r != nil { // cronexpr can panic on some inputs: the api's cronParseNext recovers too
			out = CronOutput{Error: fmt.Sprintf("failed parsing cron expression: %v", r)}
		}
	}()
	zone := in.TimeZone
	if zone == "" {
		zone = "UTC"
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		return CronOutput{Error: fmt.Sprintf("Invalid time zone %q: %v", zone, err)}
	}
	specs := in.Specs
	if in.Spec != "" {
		specs = []string{in.Spec}
	}
	if len(specs) == 0 {
		return CronOutput{Error: "Must specify a spec"}
	}
	from := time.Unix(in.From, 0).In(loc)
	var next time.Time
	for _, spec := range specs {
		expr, err := cronexpr.Parse(spec)
		if err != nil {
			return CronOutput{Error: fmt.Sprintf("Invalid cron spec %q: %v", spec, err)}
		}
		t := expr.Next(from)
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	if next.IsZero() {
		return CronOutput{}
	}
	return CronOutput{Next: next.Unix(), Time: next.Format(time.RFC3339Nano)}
}
