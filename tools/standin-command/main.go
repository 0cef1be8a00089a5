// pulumi-resource-command, nats-fly stand-in.
//
// Implements command:local:Command and the command:local:run invoke with the semantics of
// pulumi-command v1.2.1 (see shared/reference/pulumi.md §1): the upstream provider module
// (github.com/pulumi/pulumi-command/provider) is not served by the Go module proxy reachable here.
// Not implemented: assetPaths/archivePaths and the command:remote:* resources (they fail clearly).
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"

	"github.com/pulumi/pulumi/sdk/v3/go/common/diag"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/provider"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// Stamped with -ldflags "-X main.version=...".
var version = "1.2.1"

const commandType = "command:local:Command"

var inputKeys = []resource.PropertyKey{"create", "update", "delete", "dir", "environment", "interpreter",
	"stdin", "triggers", "logging", "addPreviousOutputInEnv", "assetPaths", "archivePaths"}

type prov struct {
	pulumirpc.UnimplementedResourceProviderServer
	host *provider.HostClient
}

func main() {
	for _, a := range os.Args[1:] {
		if a == "-version" || a == "--version" {
			fmt.Println(version + " (nats-fly stand-in)")
			return
		}
	}
	err := provider.Main("command", func(h *provider.HostClient) (pulumirpc.ResourceProviderServer, error) {
		return &prov{host: h}, nil
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

var opts = plugin.MarshalOptions{KeepUnknowns: true, KeepSecrets: true, SkipNulls: true}

func unmarshal(s *structpb.Struct) (resource.PropertyMap, error) {
	if s == nil {
		return resource.PropertyMap{}, nil
	}
	return plugin.UnmarshalProperties(s, opts)
}

func marshal(m resource.PropertyMap) (*structpb.Struct, error) { return plugin.MarshalProperties(m, opts) }

// plain strips secret wrappers recursively.
func plain(v resource.PropertyValue) resource.PropertyValue {
	switch {
	case v.IsSecret():
		return plain(v.SecretValue().Element)
	case v.IsArray():
		arr := make([]resource.PropertyValue, len(v.ArrayValue()))
		for i, e := range v.ArrayValue() {
			arr[i] = plain(e)
		}
		return resource.NewArrayProperty(arr)
	case v.IsObject():
		return resource.NewObjectProperty(plainMap(v.ObjectValue()))
	}
	return v
}

func plainMap(m resource.PropertyMap) resource.PropertyMap {
	out := resource.PropertyMap{}
	for k, v := range m {
		out[k] = plain(v)
	}
	return out
}

func inputsOf(m resource.PropertyMap) resource.PropertyMap {
	out := resource.PropertyMap{}
	for _, k := range inputKeys {
		if v, ok := m[k]; ok && !v.IsNull() {
			out[k] = v
		}
	}
	return out
}

func anySecret(m resource.PropertyMap) bool {
	for _, v := range m {
		if v.ContainsSecrets() {
			return true
		}
	}
	return false
}

func str(m resource.PropertyMap, k resource.PropertyKey) string {
	v := plain(m[k])
	if v.IsString() {
		return v.StringValue()
	}
	return ""
}

func (p *prov) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version}, nil
}

func (p *prov) GetSchema(context.Context, *pulumirpc.GetSchemaRequest) (*pulumirpc.GetSchemaResponse, error) {
	return &pulumirpc.GetSchemaResponse{Schema: `{"name":"command","version":"` + version + `"}`}, nil
}

func (p *prov) CheckConfig(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	return &pulumirpc.CheckResponse{Inputs: req.GetNews()}, nil
}

func (p *prov) DiffConfig(context.Context, *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	return &pulumirpc.DiffResponse{Changes: pulumirpc.DiffResponse_DIFF_NONE}, nil
}

func (p *prov) Configure(context.Context, *pulumirpc.ConfigureRequest) (*pulumirpc.ConfigureResponse, error) {
	// SupportsPreview=false: the engine never calls Create/Update during preview, so commands never
	// run in a preview and their outputs stay unknown.
	return &pulumirpc.ConfigureResponse{AcceptSecrets: true}, nil
}

func (p *prov) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) { return &emptypb.Empty{}, nil }

func checkType(t, urn string) error {
	if t == "" {
		t = string(resource.URN(urn).Type())
	}
	if t != commandType {
		return fmt.Errorf("resource type %q is not supported by this nats-fly stand-in of pulumi-resource-command "+
			"(only %s and the command:local:run invoke)", t, commandType)
	}
	return nil
}

func (p *prov) Check(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	if err := checkType(req.GetType(), req.GetUrn()); err != nil {
		return nil, err
	}
	news, err := unmarshal(req.GetNews())
	if err != nil {
		return nil, err
	}
	var failures []*pulumirpc.CheckFailure
	for _, k := range []resource.PropertyKey{"assetPaths", "archivePaths"} {
		if v, ok := news[k]; ok && !v.IsNull() {
			failures = append(failures, &pulumirpc.CheckFailure{Property: string(k),
				Reason: "not supported by the nats-fly stand-in of pulumi-resource-command"})
		}
	}
	for k := range news {
		if !strings.HasPrefix(string(k), "__") && !isInputKey(k) {
			failures = append(failures, &pulumirpc.CheckFailure{Property: string(k), Reason: "unknown property"})
		}
	}
	if _, ok := news["addPreviousOutputInEnv"]; !ok {
		news["addPreviousOutputInEnv"] = resource.NewBoolProperty(true)
	}
	s, err := marshal(news)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.CheckResponse{Inputs: s, Failures: failures}, nil
}

func isInputKey(k resource.PropertyKey) bool {
	for _, i := range inputKeys {
		if i == k {
			return true
		}
	}
	return false
}

func (p *prov) Diff(_ context.Context, req *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	olds, err := unmarshal(req.GetOldInputs())
	if err != nil {
		return nil, err
	}
	if len(olds) == 0 {
		if olds, err = unmarshal(req.GetOlds()); err != nil {
			return nil, err
		}
	}
	olds = inputsOf(olds)
	news, err := unmarshal(req.GetNews())
	if err != nil {
		return nil, err
	}
	news = inputsOf(news)
	ignore := map[string]bool{}
	for _, k := range req.GetIgnoreChanges() {
		ignore[k] = true
	}
	resp := &pulumirpc.DiffResponse{Changes: pulumirpc.DiffResponse_DIFF_NONE, HasDetailedDiff: true,
		DetailedDiff: map[string]*pulumirpc.PropertyDiff{}}
	keys := map[resource.PropertyKey]bool{}
	for k := range olds {
		keys[k] = true
	}
	for k := range news {
		keys[k] = true
	}
	var sorted []string
	for k := range keys {
		sorted = append(sorted, string(k))
	}
	sort.Strings(sorted)
	for _, ks := range sorted {
		k := resource.PropertyKey(ks)
		if ignore[ks] {
			continue
		}
		o, inOld := olds[k]
		n, inNew := news[k]
		if inOld && inNew && !n.ContainsUnknowns() && plain(o).DeepEquals(plain(n)) {
			continue
		}
		kind := pulumirpc.PropertyDiff_UPDATE
		switch {
		case !inOld:
			kind = pulumirpc.PropertyDiff_ADD
		case !inNew:
			kind = pulumirpc.PropertyDiff_DELETE
		}
		if k == "triggers" { // upstream tags triggers replaceOnChanges
			kind += pulumirpc.PropertyDiff_ADD_REPLACE - pulumirpc.PropertyDiff_ADD
			resp.Replaces = append(resp.Replaces, ks)
		}
		resp.Changes = pulumirpc.DiffResponse_DIFF_SOME
		resp.Diffs = append(resp.Diffs, ks)
		resp.DetailedDiff[ks] = &pulumirpc.PropertyDiff{Kind: kind, InputDiff: true}
	}
	return resp, nil
}

type runArgs struct {
	command     string
	dir         string
	env         []string
	interpreter []string
	stdin       string
	logStdout   bool
	logStderr   bool
}

func argsFrom(in resource.PropertyMap, command string, prev resource.PropertyMap) runArgs {
	a := runArgs{command: command, dir: str(in, "dir"), stdin: str(in, "stdin"), env: os.Environ(),
		interpreter: []string{"/bin/sh", "-c"}, logStdout: true, logStderr: true}
	if v := plain(in["interpreter"]); v.IsArray() && len(v.ArrayValue()) > 0 {
		a.interpreter = nil
		for _, e := range v.ArrayValue() {
			if e.IsString() {
				a.interpreter = append(a.interpreter, e.StringValue())
			}
		}
	}
	if v := plain(in["environment"]); v.IsObject() {
		for _, k := range v.ObjectValue().StableKeys() {
			if e := v.ObjectValue()[k]; e.IsString() {
				a.env = append(a.env, string(k)+"="+e.StringValue())
			}
		}
	}
	addPrev := true
	if v := plain(in["addPreviousOutputInEnv"]); v.IsBool() {
		addPrev = v.BoolValue()
	}
	if addPrev && prev != nil {
		if s := str(prev, "stdout"); s != "" {
			a.env = append(a.env, "PULUMI_COMMAND_STDOUT="+s)
		}
		if s := str(prev, "stderr"); s != "" {
			a.env = append(a.env, "PULUMI_COMMAND_STDERR="+s)
		}
	}
	switch str(in, "logging") {
	case "stdout":
		a.logStderr = false
	case "stderr":
		a.logStdout = false
	case "none":
		a.logStdout, a.logStderr = false, false
	}
	return a
}

// run executes the command; stdout/stderr come back with the trailing newline trimmed.
func (p *prov) run(ctx context.Context, urn string, a runArgs) (string, string, error) {
	args := append(append([]string{}, a.interpreter[1:]...), a.command)
	cmd := exec.CommandContext(ctx, a.interpreter[0], args...)
	cmd.Dir, cmd.Env = a.dir, a.env
	if a.stdin != "" {
		cmd.Stdin = strings.NewReader(a.stdin)
	}
	var stdout, stderr, both bytes.Buffer
	var mu sync.Mutex
	var wg sync.WaitGroup
	stream := func(r io.Reader, buf *bytes.Buffer, log bool) {
		defer wg.Done()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
		for sc.Scan() {
			line := sc.Text()
			mu.Lock()
			buf.WriteString(line + "\n")
			both.WriteString(line + "\n")
			mu.Unlock()
			if log && p.host != nil {
				_ = p.host.LogStatus(ctx, diag.Info, resource.URN(urn), line)
			}
		}
		_, _ = io.Copy(io.Discard, r)
	}
	outR, err := cmd.StdoutPipe()
	if err != nil {
		return "", "", err
	}
	errR, err := cmd.StderrPipe()
	if err != nil {
		return "", "", err
	}
	if err := cmd.Start(); err != nil {
		return "", "", fmt.Errorf("starting %q: %w", a.command, err)
	}
	wg.Add(2)
	go stream(outR, &stdout, a.logStdout)
	go stream(errR, &stderr, a.logStderr)
	wg.Wait()
	err = cmd.Wait()
	so, se := strings.TrimSuffix(stdout.String(), "\n"), strings.TrimSuffix(stderr.String(), "\n")
	if err != nil {
		return so, se, fmt.Errorf("%w: running %q:\n%s", err, a.command, both.String())
	}
	return so, se, nil
}

func outputs(inputs resource.PropertyMap, stdout, stderr string) resource.PropertyMap {
	out := inputs.Copy()
	so, se := resource.NewStringProperty(stdout), resource.NewStringProperty(stderr)
	if anySecret(inputs) {
		so, se = resource.MakeSecret(so), resource.MakeSecret(se)
	}
	out["stdout"], out["stderr"] = so, se
	return out
}

func (p *prov) Create(ctx context.Context, req *pulumirpc.CreateRequest) (*pulumirpc.CreateResponse, error) {
	if err := checkType(req.GetType(), req.GetUrn()); err != nil {
		return nil, err
	}
	in, err := unmarshal(req.GetProperties())
	if err != nil {
		return nil, err
	}
	in = inputsOf(in)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	id := resource.URN(req.GetUrn()).Name() + hex.EncodeToString(b)
	var so, se string
	if c := str(in, "create"); c != "" {
		if so, se, err = p.run(ctx, req.GetUrn(), argsFrom(in, c, nil)); err != nil {
			return nil, err // nothing is saved: the next up re-runs create (as upstream)
		}
	}
	props, err := marshal(outputs(in, so, se))
	if err != nil {
		return nil, err
	}
	return &pulumirpc.CreateResponse{Id: id, Properties: props}, nil
}

func (p *prov) Update(ctx context.Context, req *pulumirpc.UpdateRequest) (*pulumirpc.UpdateResponse, error) {
	olds, err := unmarshal(req.GetOlds())
	if err != nil {
		return nil, err
	}
	news, err := unmarshal(req.GetNews())
	if err != nil {
		return nil, err
	}
	news = inputsOf(news)
	so, se := str(olds, "stdout"), str(olds, "stderr")
	c := str(news, "update")
	if c == "" {
		c = str(news, "create")
	}
	if c != "" {
		if so, se, err = p.run(ctx, req.GetUrn(), argsFrom(news, c, olds)); err != nil {
			return nil, err
		}
	}
	props, err := marshal(outputs(news, so, se))
	if err != nil {
		return nil, err
	}
	return &pulumirpc.UpdateResponse{Properties: props}, nil
}

func (p *prov) Delete(ctx context.Context, req *pulumirpc.DeleteRequest) (*emptypb.Empty, error) {
	state, err := unmarshal(req.GetProperties())
	if err != nil {
		return nil, err
	}
	if c := str(state, "delete"); c != "" {
		if _, _, err := p.run(ctx, req.GetUrn(), argsFrom(state, c, state)); err != nil {
			return nil, err
		}
	}
	return &emptypb.Empty{}, nil
}

func (p *prov) Read(_ context.Context, req *pulumirpc.ReadRequest) (*pulumirpc.ReadResponse, error) {
	// No drift detection, as upstream: refresh keeps the stored state.
	return &pulumirpc.ReadResponse{Id: req.GetId(), Properties: req.GetProperties(), Inputs: req.GetInputs()}, nil
}

func (p *prov) Invoke(ctx context.Context, req *pulumirpc.InvokeRequest) (*pulumirpc.InvokeResponse, error) {
	if req.GetTok() != "command:local:run" {
		return nil, fmt.Errorf("invoke %q is not supported by the nats-fly stand-in of pulumi-resource-command", req.GetTok())
	}
	in, err := unmarshal(req.GetArgs())
	if err != nil {
		return nil, err
	}
	for _, k := range []resource.PropertyKey{"assetPaths", "archivePaths"} {
		if v, ok := in[k]; ok && !v.IsNull() {
			return nil, fmt.Errorf("%s is not supported by the nats-fly stand-in of pulumi-resource-command", k)
		}
	}
	so, se, err := p.run(ctx, "", argsFrom(in, str(in, "command"), nil))
	if err != nil {
		return nil, err
	}
	ret, err := marshal(outputs(in, so, se))
	if err != nil {
		return nil, err
	}
	return &pulumirpc.InvokeResponse{Return: ret}, nil
}
