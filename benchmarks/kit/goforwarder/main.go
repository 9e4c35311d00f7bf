// Command goforwarder is the floor under a cache miss without Python (benchmarks.overhead, issue 24):
// the Python "forwarder + Redis" (benchmarks/kit/forwarder.py) done with Go's net/http server and
// client and go-redis, so the bench can measure what "a server and clients that are not Python"
// would add over the engine instead of naming it.
//
//	goforwarder --search-url URL --port P [--redis URL --plan PLAN] BODIES
//
// For each GET it looks the request target up in BODIES (JSON: target -> the engine body the proxy
// would send for it, written by benchmarks.kit.forwarder.write_bodies), POSTs that body to the
// engine with one shared keep-alive http.Client and answers the engine's bytes, unparsed, always
// 200 as the Python forwarder does (404 for a target it was not given). With --redis it also makes
// the miss's two Redis round trips: the read-or-lock EVALSHA before the engine call and the fill
// EVALSHA once the answer is written, in a goroutine. PLAN (benchmarks.kit.forwarder.write_plan)
// holds both scripts' text, their constant arguments and each target's keys, all taken from
// proxy.cache: the Lua and the key format are defined once, in Python; nothing here copies them.
// One Redis only (no cluster support). Listens on 127.0.0.1 only; exits on SIGTERM or SIGINT.
//
//	goforwarder hits --port P [--redis URL] PLAN
//
// is the same binary serving a cache hit instead, with or without the rate limiter (hits.go).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// plan is what the Redis round trips need, written by the Python side from proxy.cache.
type plan struct {
	ReadOrLock string  `json:"read_or_lock"`
	Fill       string  `json:"fill"`
	YoungS     float64 `json:"young_s"`
	LockMS     int64   `json:"lock_ms"`
	KeepMS     int64   `json:"keep_ms"`
	Channel    string  `json:"channel"`
	// target -> [storage key, lock key, digest] (proxy.cache.keys).
	Keys map[string][3]string `json:"keys"`
}

type forwarder struct {
	bodies    map[string][]byte
	searchURL string
	client    *http.Client
	rdb       *redis.Client // nil: the bare forwarder
	plan      plan
	read      *redis.Script
	fill      *redis.Script
	fills     sync.WaitGroup
}

func (f *forwarder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// RequestURI is the target as the client sent it: what aiohttp's request.raw_path is.
	body, ok := f.bodies[r.RequestURI]
	if !ok || r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	var keys [3]string
	taken := "0"
	if f.rdb != nil {
		keys = f.plan.Keys[r.RequestURI]
		now := float64(time.Now().UnixNano()) / 1e9
		reply, err := f.read.Run(r.Context(), f.rdb, keys[:2], now-f.plan.YoungS, f.plan.LockMS).Slice()
		if err != nil {
			http.Error(w, "read-or-lock: "+err.Error(), http.StatusBadGateway)
			return
		}
		if n, _ := reply[1].(int64); n == 1 {
			taken = "1"
		}
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, f.searchURL, bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	req.Header.Set("Content-Type", "application/json")
	answer, err := f.client.Do(req)
	if err != nil {
		http.Error(w, "engine: "+err.Error(), http.StatusBadGateway)
		return
	}
	data, err := io.ReadAll(answer.Body)
	answer.Body.Close()
	if err != nil {
		http.Error(w, "engine: "+err.Error(), http.StatusBadGateway)
		return
	}
	header := w.Header()
	header.Set("Content-Type", "application/json")
	// A length, as aiohttp sends it: without one net/http chunks any answer over 2 KiB.
	header.Set("Content-Length", strconv.Itoa(len(data)))
	w.Write(data)
	if f.rdb == nil {
		return
	}
	// As the proxy's miss: the fill starts once the answer is sent (proxy.cache.response_cache).
	http.NewResponseController(w).Flush()
	f.fills.Add(1)
	go func() {
		defer f.fills.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		args := []any{data, f.plan.KeepMS, taken, f.plan.Channel, keys[2]}
		if err := f.fill.Run(ctx, f.rdb, keys[:2], args...).Err(); err != nil {
			log.Printf("fill: %v", err)
		}
	}()
}

func readJSON(path string, into any) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, into)
}

// newRedis is a client as the Python forwarder's redis-py one: RESP2, 8 connections, no extra
// commands on connect.
func newRedis(url string) *redis.Client {
	options, err := redis.ParseURL(url)
	if err != nil {
		log.Fatalf("redis: %v", err)
	}
	options.Protocol = 2
	options.PoolSize = 8
	options.DisableIdentity = true
	options.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	return redis.NewClient(options)
}

// serve runs handler on 127.0.0.1:port until SIGTERM or SIGINT, then shuts the server down.
func serve(port int, handler http.Handler) {
	server := &http.Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Handler: handler}
	stop, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	failed := make(chan error, 1)
	go func() { failed <- server.ListenAndServe() }()
	select {
	case err := <-failed:
		log.Fatalf("serve: %v", err)
	case <-stop.Done():
	}
	ctx, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	server.Shutdown(ctx)
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "hits" {
		serveHits(os.Args[2:])
		return
	}
	searchURL := flag.String("search-url", "", "the engine's POST <alias>/_search URL")
	port := flag.Int("port", 0, "the port to listen on, on 127.0.0.1")
	redisURL := flag.String("redis", "", "also make a miss's two Redis round trips, on this Redis (redis://...)")
	planPath := flag.String("plan", "", "with --redis: the scripts, their arguments and the targets' keys (JSON)")
	flag.Parse()
	if flag.NArg() != 1 || *searchURL == "" || *port == 0 || (*redisURL != "") != (*planPath != "") {
		fmt.Fprintln(os.Stderr, "usage: goforwarder --search-url URL --port P [--redis URL --plan PLAN] BODIES")
		os.Exit(2)
	}
	var texts map[string]string
	if err := readJSON(flag.Arg(0), &texts); err != nil {
		log.Fatalf("bodies: %v", err)
	}
	f := &forwarder{bodies: make(map[string][]byte, len(texts)), searchURL: *searchURL}
	for target, body := range texts {
		f.bodies[target] = []byte(body)
	}
	// One shared keep-alive client, as the Python forwarder's one ClientSession; unparsed bytes.
	f.client = &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        8,
		MaxIdleConnsPerHost: 8,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}}
	if *redisURL != "" {
		if err := readJSON(*planPath, &f.plan); err != nil {
			log.Fatalf("plan: %v", err)
		}
		f.rdb = newRedis(*redisURL)
		f.read, f.fill = redis.NewScript(f.plan.ReadOrLock), redis.NewScript(f.plan.Fill)
	}
	serve(*port, f)
	if f.rdb != nil {
		// The fills still under way, for a second at most, as the Python forwarder waits for its writes.
		waited := make(chan struct{})
		go func() { f.fills.Wait(); close(waited) }()
		select {
		case <-waited:
		case <-time.After(time.Second):
		}
		f.rdb.Close()
	}
}
