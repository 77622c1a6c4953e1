package main

import (
	"context"
	"io"
	"net/http"
	"strconv"

	"go.opencensus.io/plugin/ochttp"
)

// callHTTP GETs url through ochttp (B3 multiple headers) and returns the HTTP
// status. The client span ends when the body has been read and closed.
func callHTTP(ctx context.Context, url string) string {
	client := &http.Client{Transport: &ochttp.Transport{StartOptions: always}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		fail("request: %v", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		fail("GET %s: %v", url, err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		fail("body: %v", err)
	}
	resp.Body.Close()
	return strconv.Itoa(resp.StatusCode)
}
