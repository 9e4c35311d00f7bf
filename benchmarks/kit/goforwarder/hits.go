// The hit server (benchmarks.ratelimit --go, issue 24): a cache hit served by Go, with or without
// the proxy's rate limiter, so the bench can measure what the limiter costs a server that is not
// Python instead of naming it.
//
//	goforwarder hits --port P [--redis URL] PLAN
//
// Every GET of PLAN's target is answered 200 with PLAN's body and headers: the Python proxy's own
// answer to that cached search, fetched by the bench (benchmarks.kit.gohits.write_hit_plan).
// Anything else is a 404. With a limiter in PLAN (and --redis), each answer first does what
// proxy.ratelimit.limiter does for a request (Limiter.leased, then Limiter.admit):
//
//   - identity: the peer, or the right-most untrusted X-Forwarded-For entry when the peer is
//     trusted (proxy.ratelimit.identity's walk), remembered per (peer, X-Forwarded-For);
//   - a live lease covering the cost answers at once, locally;
//   - otherwise a decision in Redis: proxy.ratelimit.script's LUA over EVALSHA, its keys and
//     arguments as RedisBuckets.take_many makes them, batched as proxy.ratelimit.batch does (one
//     round trip in flight, the decisions asked for meanwhile leave together, at most MaxBatch,
//     each with a deadline of REDIS_TIMEOUT_MS), asking for a lease of LeaseShare of the capacity
//     when the capacity is at least LeaseMinCapacity and the last decision left the bucket at
//     least half full; the granted lease serves the client's next requests for LeaseSeconds.
//     Concurrent requests of a client whose lease is in flight wait for it, as Python's do;
//   - the five rate-limit headers of proxy.ratelimit.headers on the answer.
//
// Every constant, the script and the keys' heads come from PLAN, written from the proxy's own
// settings and modules: nothing of the limiter's format is typed here. What it leaves out of the
// Python limiter (no API keys, no fallback or breaker when Redis fails, memory unbounded, no
// metrics, one route and one cost) is listed in write_hit_plan's docstring.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// hitPlan is the answer to serve and, when the limiter is on, its terms.
type hitPlan struct {
	Target  string       `json:"target"`
	Body    []byte       `json:"body"` // base64 in the JSON
	Headers [][2]string  `json:"headers"`
	Limiter *limiterPlan `json:"limiter"` // null: the limiter off
}

// limiterPlan is everything the limiter needs, from proxy.settings and proxy.ratelimit.
type limiterPlan struct {
	Script           string   `json:"script"`      // proxy.ratelimit.script.LUA
	GroupHeads       []string `json:"group_heads"` // proxy.ratelimit.script.group_heads
	Policy           string   `json:"policy"`
	Cost             float64  `json:"cost"`
	Capacity         int64    `json:"capacity"`
	PeriodMS         int64    `json:"period_ms"`
	LeaseSeconds     float64  `json:"lease_seconds"`
	LeaseShare       float64  `json:"lease_share"`
	LeaseMinCapacity int64    `json:"lease_min_capacity"`
	MaxBatch         int      `json:"max_batch"`
	TimeoutMS        int64    `json:"timeout_ms"`
	Trusted          []string `json:"trusted"`
	IPv6Prefix       int      `json:"ipv6_prefix"`
	MaxHops          int      `json:"max_forwarded_hops"`
	MaxEntryChars    int      `json:"max_entry_chars"`
	MaxRemembered    int      `json:"max_remembered_forwarded_chars"`
	UnknownClient    string   `json:"unknown_client_id"`
}

type hitServer struct {
	target  string
	body    []byte
	length  []string
	headers [][2]string
	limiter *limiter // nil: off
}

func (s *hitServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet || r.RequestURI != s.target {
		http.NotFound(w, r)
		return
	}
	header := w.Header()
	for _, kv := range s.headers {
		header[kv[0]] = []string{kv[1]}
	}
	if s.limiter != nil && !s.limiter.admit(r, header) {
		w.WriteHeader(http.StatusTooManyRequests)
		return
	}
	// A length, as aiohttp sends it: without one net/http chunks any answer over 2 KiB.
	header["Content-Length"] = s.length
	w.Write(s.body)
}

// decision is proxy.ratelimit.bucket.Decision without its bucket (only the headers read it here).
type decision struct {
	allowed      bool
	remaining    int64
	retryAfterMS int64
	resetMS      int64
	leased       float64
}

// lease is proxy.ratelimit.limiter._Lease.
type lease struct {
	tokens    float64
	expires   time.Time
	remaining int64
	resetMS   int64
}

type seen struct{ peer, forwarded string }

type take struct {
	key      string
	lease    float64
	deadline time.Time
	done     chan taken
}

type taken struct {
	decision decision
	err      error
}

type limiter struct {
	plan      *limiterPlan
	trusted   []netip.Prefix
	leaseSize float64
	lifetime  time.Duration
	timeout   time.Duration
	rdb       *redis.Client
	script    *redis.Script
	takes     chan *take

	mu         sync.Mutex // over the three maps: handlers run on several goroutines
	identities map[seen]string
	leases     map[string]*lease
	leasing    map[string]chan struct{} // a lease asked for and not back yet, per client
}

func newLimiter(plan *limiterPlan, rdb *redis.Client) *limiter {
	l := &limiter{
		plan:       plan,
		lifetime:   time.Duration(plan.LeaseSeconds * float64(time.Second)),
		timeout:    time.Duration(plan.TimeoutMS) * time.Millisecond,
		rdb:        rdb,
		script:     redis.NewScript(plan.Script),
		takes:      make(chan *take, 4096),
		identities: make(map[seen]string),
		leases:     make(map[string]*lease),
		leasing:    make(map[string]chan struct{}),
	}
	for _, text := range plan.Trusted {
		prefix, err := netip.ParsePrefix(text)
		if err != nil {
			log.Fatalf("trusted: %v", err)
		}
		l.trusted = append(l.trusted, prefix)
	}
	// Limiter._lease_size's first rule; its second (the last decision below half) is per client.
	if plan.Capacity >= plan.LeaseMinCapacity {
		l.leaseSize = float64(plan.Capacity) * plan.LeaseShare
	}
	go l.batches()
	return l
}

// admit is Limiter.leased, else Limiter.admit, then the headers; false for a refusal.
func (l *limiter) admit(r *http.Request, header http.Header) bool {
	id := l.client(r)
	cost := l.plan.Cost
	now := time.Now()
	l.mu.Lock()
	got, ok := l.fromLease(id, cost, now)
	var deadline time.Time
	if !ok {
		if wait, inFlight := l.leasing[id]; inFlight {
			// A lease for this client is on its way: wait for it rather than take another. The
			// wait counts toward the deadline, as in Python.
			deadline = now.Add(l.timeout)
			l.mu.Unlock()
			<-wait
			l.mu.Lock()
			got, ok = l.fromLease(id, cost, time.Now())
		}
	}
	if ok {
		l.mu.Unlock()
		l.setHeaders(header, got)
		return true
	}
	size := 0.0
	if _, inFlight := l.leasing[id]; !inFlight {
		size = l.leaseFor(id)
	}
	var leasing chan struct{}
	if size > 0 {
		leasing = make(chan struct{})
		l.leasing[id] = leasing
	}
	l.mu.Unlock()
	if deadline.IsZero() {
		deadline = time.Now().Add(l.timeout)
	}
	asked := &take{key: l.key(id), lease: size, deadline: deadline, done: make(chan taken, 1)}
	l.takes <- asked
	answer := <-asked.done
	l.mu.Lock()
	if answer.err == nil {
		l.keepLease(id, answer.decision, time.Now())
	}
	if leasing != nil {
		if l.leasing[id] == leasing {
			delete(l.leasing, id)
		}
		close(leasing)
	}
	l.mu.Unlock()
	if answer.err != nil {
		// The Python limiter falls back (a local bucket by default); this server has no fallback.
		log.Printf("rate limit: %v", answer.err)
		header["Retry-After"] = []string{"1"}
		return false
	}
	got = answer.decision
	if got.leased > 0 { // the client may spend its lease too, as the next answers say
		got = decision{true, got.remaining + int64(got.leased), 0, got.resetMS, got.leased}
	}
	l.setHeaders(header, got)
	if !got.allowed {
		header["Retry-After"] = []string{strconv.FormatInt(wholeSeconds(got.retryAfterMS), 10)}
	}
	return got.allowed
}

// fromLease is Limiter._from_lease (under l.mu).
func (l *limiter) fromLease(id string, cost float64, now time.Time) (decision, bool) {
	held := l.leases[id]
	if held == nil || held.tokens < cost || now.After(held.expires) {
		return decision{}, false
	}
	held.tokens -= cost
	return decision{true, held.remaining + int64(held.tokens), 0, held.resetMS, 0}, true
}

// leaseFor is Limiter._lease_size (under l.mu).
func (l *limiter) leaseFor(id string) float64 {
	if l.leaseSize == 0 {
		return 0
	}
	// remaining is a floor: a bucket at half of an odd capacity shows max // 2.
	if last := l.leases[id]; last != nil && last.remaining < l.plan.Capacity/2 {
		return 0
	}
	return l.leaseSize
}

// keepLease is Limiter._keep_lease (under l.mu).
func (l *limiter) keepLease(id string, got decision, now time.Time) {
	last := l.leases[id]
	if got.leased == 0 && last != nil && last.tokens > 0 && !now.After(last.expires) {
		last.remaining, last.resetMS = got.remaining, got.resetMS
		return
	}
	l.leases[id] = &lease{got.leased, now.Add(l.lifetime), got.remaining, got.resetMS}
}

// client is Limiter.client: proxy.ratelimit.identity.identify, remembered while short.
func (l *limiter) client(r *http.Request) string {
	peer := r.RemoteAddr
	if host, _, err := net.SplitHostPort(peer); err == nil {
		peer = host
	}
	var forwarded string
	switch values := r.Header["X-Forwarded-For"]; len(values) {
	case 0:
	case 1:
		forwarded = values[0]
	default:
		forwarded = strings.Join(values, ",")
	}
	if len(forwarded) > l.plan.MaxRemembered {
		return l.identify(peer, forwarded)
	}
	key := seen{peer, forwarded}
	l.mu.Lock()
	id, ok := l.identities[key]
	l.mu.Unlock()
	if !ok {
		id = l.identify(peer, forwarded)
		l.mu.Lock()
		l.identities[key] = id
		l.mu.Unlock()
	}
	return id
}

// identify is identity._client_address and address_id (no API keys).
func (l *limiter) identify(peer, forwarded string) string {
	hop, ok := bareAddress(peer)
	if !ok {
		return l.plan.UnknownClient
	}
	if forwarded == "" || !l.isTrusted(hop) {
		return l.addressID(hop)
	}
	// The right-most MaxHops entries, right to left; a longer chain stops as junk does.
	rest := forwarded
	for read := 0; read < l.plan.MaxHops; read++ {
		entry := rest
		last := strings.LastIndexByte(rest, ',')
		if last >= 0 {
			entry, rest = rest[last+1:], rest[:last]
		}
		entry = strings.TrimSpace(entry)
		if entry != "" {
			address, ok := netip.Addr{}, false
			if len(entry) <= l.plan.MaxEntryChars {
				address, ok = forwardedAddress(entry)
			}
			if !ok {
				break // junk: nothing further left is believed
			}
			if !l.isTrusted(address) {
				return l.addressID(address)
			}
			hop = address
		}
		if last < 0 {
			break
		}
	}
	return l.addressID(hop)
}

func (l *limiter) isTrusted(address netip.Addr) bool {
	for _, network := range l.trusted {
		if network.Contains(address) {
			return true
		}
	}
	return false
}

func (l *limiter) addressID(address netip.Addr) string {
	if address.Is4() || l.plan.IPv6Prefix >= 128 {
		return "ip:" + address.String()
	}
	return "ip:" + netip.PrefixFrom(address, l.plan.IPv6Prefix).Masked().String()
}

// bareAddress is identity._address: an IPv4-mapped address as IPv4, no zone.
func bareAddress(text string) (netip.Addr, bool) {
	address, err := netip.ParseAddr(text)
	if err != nil {
		return netip.Addr{}, false
	}
	return address.Unmap().WithZone(""), true
}

// validPort is identity._valid_port: one to five digits, at most 65535.
func validPort(text string) bool {
	if len(text) < 1 || len(text) > 5 || strings.Trim(text, "0123456789") != "" {
		return false
	}
	port, err := strconv.Atoi(text)
	return err == nil && port <= 65535
}

// forwardedAddress is identity._forwarded_address.
func forwardedAddress(entry string) (netip.Addr, bool) {
	if strings.HasPrefix(entry, "[") {
		inside, rest, closed := strings.Cut(entry[1:], "]")
		if !closed || (rest != "" && !(strings.HasPrefix(rest, ":") && validPort(rest[1:]))) {
			return netip.Addr{}, false
		}
		address, ok := bareAddress(inside)
		return address, ok && strings.Contains(inside, ":")
	}
	if strings.Count(entry, ":") == 1 {
		host, port, _ := strings.Cut(entry, ":")
		address, ok := bareAddress(host)
		return address, ok && address.Is4() && validPort(port)
	}
	return bareAddress(entry)
}

// key is script.bucket_key: the head of the client's key group (crc32 % groups) and its id.
func (l *limiter) key(id string) string {
	heads := l.plan.GroupHeads
	return heads[crc32.ChecksumIEEE([]byte(id))%uint32(len(heads))] + id
}

// setHeaders is proxy.ratelimit.headers.rate_limit_headers.
func (l *limiter) setHeaders(header http.Header, got decision) {
	policy := `"` + l.plan.Policy + `"`
	capacity := strconv.FormatInt(l.plan.Capacity, 10)
	remaining := strconv.FormatInt(got.remaining, 10)
	reset := strconv.FormatInt(wholeSeconds(got.resetMS), 10)
	header["RateLimit-Policy"] = []string{policy + ";q=" + capacity + ";w=" + strconv.FormatInt(max(1, wholeSeconds(l.plan.PeriodMS)), 10)}
	header["RateLimit"] = []string{policy + ";r=" + remaining + ";t=" + reset}
	header["X-RateLimit-Limit"] = []string{capacity}
	header["X-RateLimit-Remaining"] = []string{remaining}
	header["X-RateLimit-Reset"] = []string{reset}
}

// wholeSeconds is headers._seconds: whole seconds, rounded up, never below 0.
func wholeSeconds(ms int64) int64 {
	if ms <= 0 {
		return 0
	}
	return (ms + 999) / 1000
}

// batches is proxy.ratelimit.batch.Batcher: one round trip at a time, carrying every decision
// asked for while the last one was out.
func (l *limiter) batches() {
	batch := make([]*take, 0, l.plan.MaxBatch)
	for first := range l.takes {
		batch = append(batch[:0], first)
	more:
		for len(batch) < l.plan.MaxBatch {
			select {
			case next := <-l.takes:
				batch = append(batch, next)
			default:
				break more
			}
		}
		l.roundTrip(batch)
	}
}

var errLate = errors.New("no rate-limit decision in time: Redis is slow")

// roundTrip is Batcher._send and _round_trip with RedisBuckets.take_many's arguments: keys, now
// (an empty string: the server's TIME), one byte per key naming its terms, the distinct terms (cost,
// capacity, period_ms, lease) in their order of first use. The floats as Python's repr writes
// them for these values ("1.0", "50000000.0"); Lua reads the same doubles either way.
func (l *limiter) roundTrip(batch []*take) {
	now := time.Now()
	live := make([]*take, 0, len(batch))
	var earliest time.Time
	for _, one := range batch {
		if !one.deadline.After(now) {
			one.done <- taken{err: errLate}
			continue
		}
		live = append(live, one)
		if earliest.IsZero() || one.deadline.Before(earliest) {
			earliest = one.deadline
		}
	}
	if len(live) == 0 {
		return
	}
	keys := make([]string, len(live))
	which := make([]byte, len(live))
	var leases []float64
	args := []any{"", nil}
	for n, one := range live {
		keys[n] = one.key
		index := -1
		for i, known := range leases {
			if known == one.lease {
				index = i
			}
		}
		if index < 0 {
			index = len(leases)
			leases = append(leases, one.lease)
			args = append(args, pyFloat(l.plan.Cost), pyFloat(float64(l.plan.Capacity)),
				strconv.FormatInt(l.plan.PeriodMS, 10), pyFloat(one.lease))
		}
		which[n] = byte(index)
	}
	args[1] = string(which)
	ctx, cancel := context.WithDeadline(context.Background(), earliest)
	reply, err := l.script.Run(ctx, l.rdb, keys, args...).Slice()
	cancel()
	if err == nil && len(reply) != 6*len(live) {
		err = fmt.Errorf("the script answered %d values for %d decisions", len(reply), len(live))
	}
	for n, one := range live {
		if err != nil {
			one.done <- taken{err: err}
			continue
		}
		values := reply[6*n : 6*n+6]
		allowed, _ := values[0].(int64)
		remaining, _ := values[1].(int64)
		retry, _ := values[2].(int64)
		reset, _ := values[3].(int64)
		got := decision{allowed > 0, remaining, retry, reset, 0}
		if allowed == 2 {
			got.leased = one.lease
		}
		one.done <- taken{decision: got}
	}
}

// pyFloat is Python's repr of a float for the values here: the shortest digits, ".0" if whole.
func pyFloat(value float64) string {
	text := strconv.FormatFloat(value, 'f', -1, 64)
	if !strings.ContainsAny(text, ".eEnN") {
		text += ".0"
	}
	return text
}

func serveHits(args []string) {
	flags := flag.NewFlagSet("goforwarder hits", flag.ExitOnError)
	port := flags.Int("port", 0, "the port to listen on, on 127.0.0.1")
	redisURL := flags.String("redis", "", "the Redis of the limiter's buckets (redis://...), when PLAN has a limiter")
	flags.Parse(args)
	if flags.NArg() != 1 || *port == 0 {
		fmt.Fprintln(os.Stderr, "usage: goforwarder hits --port P [--redis URL] PLAN")
		os.Exit(2)
	}
	raw, err := os.ReadFile(flags.Arg(0))
	if err != nil {
		log.Fatalf("plan: %v", err)
	}
	var plan hitPlan
	if err := json.Unmarshal(raw, &plan); err != nil {
		log.Fatalf("plan: %v", err)
	}
	s := &hitServer{
		target:  plan.Target,
		body:    plan.Body,
		length:  []string{strconv.Itoa(len(plan.Body))},
		headers: plan.Headers,
	}
	if plan.Limiter != nil {
		if *redisURL == "" {
			log.Fatal("a plan with a limiter needs --redis")
		}
		rdb := newRedis(*redisURL)
		defer rdb.Close()
		s.limiter = newLimiter(plan.Limiter, rdb)
	}
	serve(*port, s)
}
