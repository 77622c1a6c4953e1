// Command opencensus-client is a real OpenCensus Go peer for tracewire's
// integration tests: it makes one call, traced by OpenCensus Go's own client
// instrumentation, inside a sampled trace, and prints the ids of the client span
// whose context it sent.
//
//	opencensus-client [-trace-id HEX32] http URL
//	opencensus-client [-trace-id HEX32] grpc HOST:PORT
//
// http makes a GET through ochttp's Transport, which sends B3 multiple headers
// (X-B3-TraceId, X-B3-SpanId, X-B3-Sampled) by default. grpc makes a
// grpc.health.v1.Health/Check call through grpc-go with ocgrpc's ClientHandler,
// which sends grpc-trace-bin (the OpenCensus binary format).
//
// With -trace-id the trace is that one (a sampled remote parent in it is the
// client span's parent); without it, a new sampled trace. On success it prints
// one line:
//
//	trace_id=<32 hex> span_id=<16 hex> sampled=<bool> status=<HTTP status or serving status>
//
// It builds offline with Debian's golang-go.opencensus-dev and
// golang-google-grpc-dev in GOPATH mode:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o opencensus-client .
package main

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"go.opencensus.io/trace"
)

// clientSpans keeps the client spans the instrumentation ends.
type clientSpans struct {
	mu    sync.Mutex
	spans []*trace.SpanData
}

func (c *clientSpans) ExportSpan(s *trace.SpanData) {
	if s.SpanKind != trace.SpanKindClient {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.spans = append(c.spans, s)
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "opencensus-client: "+format+"\n", args...)
	os.Exit(1)
}

// always samples every span, the client spans included.
var always = trace.StartOptions{Sampler: trace.AlwaysSample()}

func main() {
	traceID := flag.String("trace-id", "", "the trace to continue (32 hex digits)")
	flag.Parse()
	if flag.NArg() != 2 {
		fail("usage: opencensus-client [-trace-id HEX32] http URL | grpc HOST:PORT")
	}
	exported := &clientSpans{}
	trace.RegisterExporter(exported)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var parent *trace.Span
	if *traceID != "" {
		raw, err := hex.DecodeString(*traceID)
		if err != nil || len(raw) != 16 {
			fail("bad -trace-id %q", *traceID)
		}
		remote := trace.SpanContext{
			SpanID:       trace.SpanID{0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11},
			TraceOptions: 1,
		}
		copy(remote.TraceID[:], raw)
		ctx, parent = trace.StartSpanWithRemoteParent(ctx, "opencensus-client", remote, trace.WithSampler(always.Sampler))
	} else {
		ctx, parent = trace.StartSpan(ctx, "opencensus-client", trace.WithSampler(always.Sampler))
	}

	var status string
	switch target := flag.Arg(1); flag.Arg(0) {
	case "http":
		status = callHTTP(ctx, target)
	case "grpc":
		status = callGRPC(ctx, target)
	default:
		fail("unknown protocol %q (http or grpc)", flag.Arg(0))
	}
	parent.End()

	exported.mu.Lock()
	defer exported.mu.Unlock()
	if len(exported.spans) != 1 {
		fail("%d client spans ended, want 1", len(exported.spans))
	}
	s := exported.spans[0]
	fmt.Printf("trace_id=%s span_id=%s sampled=%t status=%s\n",
		hex.EncodeToString(s.TraceID[:]), hex.EncodeToString(s.SpanID[:]), s.IsSampled(), status)
}
