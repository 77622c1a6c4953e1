package main

import (
	"context"

	"go.opencensus.io/plugin/ocgrpc"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// callGRPC calls grpc.health.v1.Health/Check at addr through ocgrpc
// (grpc-trace-bin) and returns the serving status. The client span ends with
// the call.
func callGRPC(ctx context.Context, addr string) string {
	conn, err := grpc.DialContext(ctx, addr,
		grpc.WithInsecure(),
		grpc.WithBlock(),
		grpc.WithStatsHandler(&ocgrpc.ClientHandler{StartOptions: always}))
	if err != nil {
		fail("dial %s: %v", addr, err)
	}
	defer conn.Close()
	reply, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		fail("Health/Check: %v", err)
	}
	return reply.GetStatus().String()
}
