// pulumi-resource-command, nats-fly stand-in for upstream pulumi-command v1.2.1.
//
// The Go module proxy reachable here refuses github.com/pulumi/pulumi-command/provider (403), so
// scripts/bootstrap builds this instead. It implements command:local:Command and the
// command:local:run invoke with v1.2.1's behaviour, which comes from two upstream sources (paths are
// repo:path; every rule below names the file it follows):
//
//   - pulumi-command:provider/pkg/provider/local/{commandController.go,commandOutputs.go,base.go,
//     logging.go}, provider/pkg/provider/common/inputs.go, provider/pkg/provider/util/util.go: what the
//     resource does (the v1.x controller with infer.CreateRequest/DryRun, no WireDependencies, no Diff);
//   - pulumi-go-provider:infer/resource.go, infer/internal/ende/ende.go, infer/function.go,
//     provider.go: what the `infer` framework does around it (Check, the default Diff, preview
//     outputs, which outputs become secret), plus sdk/go/common/util/mapper for Check's failure texts.
//
// Refused here, clearly, where upstream would act: assetPaths/archivePaths (a Check failure) and the
// command:remote:* resources (an error). Not reproduced: Configure's AcceptOutputs (the engine then
// sends plain values instead of output values; the state is the same), the full GetSchema, and the
// framework version key that newer pulumi-go-provider releases add to the provider's config.
package main

import (
	"bufio"
	"bytes"
	"context"
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
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/cmdutil"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/provider"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// Stamped with -ldflags "-X main.version=..." (upstream stamps provider/pkg/version.Version).
var version = "1.2.1"

const (
	commandType = "command:local:Command"
	runToken    = "command:local:run"
	// The Go type names upstream's mapper puts in its Check failures.
	commandInputsType = "local.CommandInputs"
	runInputsType     = "local.RunInputs"
)

// Field kinds of the upstream input structs (local/base.go BaseInputs, common/inputs.go
// ResourceInputs, local/command.go CommandInputs, local/run.go RunInputs), as Go types.
const (
	kString  = "string"
	kLogging = "local.Logging"
	kBool    = "bool"
	kStrings = "[]string"
	kEnv     = "map[string]string"
	kAnyList = "[]interface {}"
)

var baseInputs = map[resource.PropertyKey]string{
	"interpreter": kStrings, "dir": kString, "environment": kEnv, "stdin": kString,
	"assetPaths": kStrings, "archivePaths": kStrings, "addPreviousOutputInEnv": kBool, "logging": kLogging,
}

// commandInputs are CommandInputs' fields: BaseInputs + ResourceInputs + logging.
var commandInputs = merge(baseInputs, map[resource.PropertyKey]string{
	"triggers": kAnyList, "create": kString, "update": kString, "delete": kString,
})

// runInputs are RunInputs' fields: BaseInputs + the required command.
var runInputs = merge(baseInputs, map[resource.PropertyKey]string{"command": kString})

func merge(a, b map[resource.PropertyKey]string) map[resource.PropertyKey]string {
	out := map[resource.PropertyKey]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

type prov struct {
	pulumirpc.UnimplementedResourceProviderServer
	host *provider.HostClient
}

// main has no flags of its own. Upstream's main hands straight to pulumi-go-provider's RunProvider,
// which calls the pulumi provider.Main: its flag.Parse knows only -tracing, so an unknown flag such
// as --version prints "flag provided but not defined" and the usage, and exits 2 (Go's flag package,
// ExitOnError). provider.Main below does exactly that.
func main() {
	err := provider.Main("command", func(h *provider.HostClient) (pulumirpc.ResourceProviderServer, error) {
		return &prov{host: h}, nil
	})
	if err != nil {
		cmdutil.ExitError(err.Error()) // as pulumi-command:provider/pkg/provider/serve.go
	}
}

// The marshalling options of pulumi-go-provider:provider.go getMap/asStruct.
var opts = plugin.MarshalOptions{KeepUnknowns: true, KeepSecrets: true, KeepResources: true, SkipNulls: true}

func unmarshal(s *structpb.Struct) (resource.PropertyMap, error) {
	if s == nil {
		return resource.PropertyMap{}, nil
	}
	return plugin.UnmarshalProperties(s, opts)
}

func marshal(m resource.PropertyMap) (*structpb.Struct, error) { return plugin.MarshalProperties(m, opts) }

// plain strips secret wrappers recursively (what ende.Decode does before the Go structs see values).
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
		out := resource.PropertyMap{}
		for k, e := range v.ObjectValue() {
			out[k] = plain(e)
		}
		return resource.NewObjectProperty(out)
	}
	return v
}

// str returns a string field and whether it is set (upstream's fields are *string: nil vs "").
func str(m resource.PropertyMap, k resource.PropertyKey) (string, bool) {
	v, ok := m[k]
	if !ok || v.IsNull() {
		return "", false
	}
	if v = plain(v); v.IsString() {
		return v.StringValue(), true
	}
	return "", false
}

// onlyInputs keeps the keys of the input struct: encoding a CommandInputs (or the CommandOutputs
// that embeds it) writes exactly these, plus what the outputs add.
func onlyInputs(m resource.PropertyMap, fields map[resource.PropertyKey]string) resource.PropertyMap {
	out := resource.PropertyMap{}
	for k, v := range m {
		if _, ok := fields[k]; ok && !v.IsNull() {
			out[k] = v
		}
	}
	return out
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

// Configure answers as pulumi-go-provider:provider.go Configure does, except AcceptOutputs (see the
// file comment). SupportsPreview: the engine calls Create/Update with preview=true, which never run
// a command (local/commandController.go) but shape the preview's outputs (see previewOutputs).
func (p *prov) Configure(context.Context, *pulumirpc.ConfigureRequest) (*pulumirpc.ConfigureResponse, error) {
	return &pulumirpc.ConfigureResponse{AcceptSecrets: true, SupportsPreview: true, AcceptResources: true}, nil
}

func (p *prov) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) { return &emptypb.Empty{}, nil }

func checkType(t, urn string) error {
	if t == "" {
		t = string(resource.URN(urn).Type())
	}
	if t != commandType {
		return fmt.Errorf("resource type %q is not supported by this nats-fly stand-in of pulumi-resource-command "+
			"(only %s and the %s invoke)", t, commandType, runToken)
	}
	return nil
}

// goType names a decoded value's Go type as the mapper sees it (Mappable(): numbers are float64).
func goType(v resource.PropertyValue) string {
	switch {
	case v.IsString():
		return "string"
	case v.IsNumber():
		return "float64"
	case v.IsBool():
		return "bool"
	case v.IsArray():
		return "[]interface {}"
	case v.IsObject():
		return "map[string]interface {}"
	}
	return v.TypeString()
}

// decodeFailures is what ende.Decode + mapper.Decode report for inputs that do not fit the struct
// (pulumi-go-provider:infer/resource.go decodeCheckingMapErrors, sdk mapper/errors.go texts).
// Unknown values decode (ende replaces them by zero values), so they are not checked.
func decodeFailures(m resource.PropertyMap, fields map[resource.PropertyKey]string, typeName string,
	required ...resource.PropertyKey,
) []*pulumirpc.CheckFailure {
	var failures []*pulumirpc.CheckFailure
	wrong := func(key, want string, got resource.PropertyValue) {
		failures = append(failures, &pulumirpc.CheckFailure{Property: key, Reason: fmt.Sprintf(
			"Field '%s' on '%s' must be a '%s'; got '%s' instead", key, typeName, want, goType(got))})
	}
	var keys []string
	for k := range m {
		keys = append(keys, string(k))
	}
	sort.Strings(keys)
	for _, ks := range keys {
		k := resource.PropertyKey(ks)
		v := plain(m[k])
		kind, known := fields[k]
		switch {
		case !known:
			failures = append(failures, &pulumirpc.CheckFailure{Property: ks,
				Reason: fmt.Sprintf("Unrecognized field '%s' on '%s'", ks, typeName)})
		case v.IsNull() || v.ContainsUnknowns():
		case kind == kString || kind == kLogging:
			if v.IsObject() {
				short := typeName[strings.IndexByte(typeName, '.')+1:]
				failures = append(failures, &pulumirpc.CheckFailure{Property: ks, Reason: fmt.Sprintf(
					"An error occurred decoding '%s.%s': Cannot decode Object{} to type %s; "+
						"it isn't a struct, and no custom decoder exists", short, ks, kind)})
			} else if !v.IsString() {
				wrong(ks, kind, v)
			}
		case kind == kBool:
			if !v.IsBool() {
				wrong(ks, kind, v)
			}
		case kind == kStrings || kind == kAnyList:
			if !v.IsArray() {
				wrong(ks, kind, v)
				continue
			}
			if kind == kStrings {
				for i, e := range v.ArrayValue() {
					if !e.IsString() && !e.IsComputed() {
						wrong(fmt.Sprintf("%s[%d]", ks, i), kString, e)
						break
					}
				}
			}
		case kind == kEnv:
			if !v.IsObject() {
				wrong(ks, kind, v)
				continue
			}
			for _, ek := range v.ObjectValue().StableKeys() {
				if e := v.ObjectValue()[ek]; !e.IsString() && !e.IsComputed() {
					wrong(fmt.Sprintf("%s[%s] value", ks, ek), kString, e)
					break
				}
			}
		}
	}
	for _, k := range required {
		if v, ok := m[k]; !ok || v.IsNull() {
			failures = append(failures, &pulumirpc.CheckFailure{Property: string(k),
				Reason: fmt.Sprintf("Missing required field '%s' on '%s'", k, typeName)})
		}
	}
	return failures
}

// Check is pulumi-go-provider:infer/resource.go Check without a CustomCheck: decode the news into
// CommandInputs (failures if they do not fit), apply Annotate defaults (v1.2.1 declares none:
// its generated SDKs carry no default for addPreviousOutputInEnv, so an unset field stays unset and
// run() reads absent as true) and encode them back, which returns the inputs as given.
func (p *prov) Check(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	if err := checkType(req.GetType(), req.GetUrn()); err != nil {
		return nil, err
	}
	news, err := unmarshal(req.GetNews())
	if err != nil {
		return nil, err
	}
	failures := decodeFailures(news, commandInputs, commandInputsType)
	for _, k := range []resource.PropertyKey{"assetPaths", "archivePaths"} {
		if v, ok := news[k]; ok && !v.IsNull() {
			failures = append(failures, &pulumirpc.CheckFailure{Property: string(k),
				Reason: "not supported by the nats-fly stand-in of pulumi-resource-command"})
		}
	}
	s, err := marshal(news)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.CheckResponse{Inputs: s, Failures: failures}, nil
}

// Diff is pulumi-go-provider:infer/resource.go's default diff (Command has CustomUpdate, no
// CustomDiff): the old *state*, cut to the input fields, against the new inputs, with
// resource.PropertyMap.Diff (secret-aware: a value that turns secret is a change) and
// plugin.NewDetailedDiffFromObjectDiff (nested paths such as environment.FOO or triggers[0]); a
// change of a field tagged replaceOnChanges (only `triggers`, local/command.go) is a replace. The SDK
// adds replace_on_changes=["triggers[*]"] on top, which the engine applies to nested paths.
// ignoreChanges is applied to top-level keys only, as there.
func (p *prov) Diff(_ context.Context, req *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	olds, err := unmarshal(req.GetOlds())
	if err != nil {
		return nil, err
	}
	news, err := unmarshal(req.GetNews())
	if err != nil {
		return nil, err
	}
	for _, k := range req.GetIgnoreChanges() {
		if v, ok := olds[resource.PropertyKey(k)]; ok {
			news[resource.PropertyKey(k)] = v
		}
	}
	oldInputs := resource.PropertyMap{}
	for k := range commandInputs {
		oldInputs[k] = olds[k] // a missing key reads as null, as property.Map.Get does
	}
	objDiff := oldInputs.Diff(news)
	resp := &pulumirpc.DiffResponse{Changes: pulumirpc.DiffResponse_DIFF_NONE, HasDetailedDiff: true,
		DetailedDiff: map[string]*pulumirpc.PropertyDiff{}}
	if objDiff.AnyChanges() {
		resp.Changes = pulumirpc.DiffResponse_DIFF_SOME
	}
	var keys []string
	detailed := plugin.NewDetailedDiffFromObjectDiff(objDiff, false)
	for k := range detailed {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		d := detailed[k]
		if k == "triggers" {
			d.Kind = d.Kind.AsReplace()
		}
		resp.DetailedDiff[k] = &pulumirpc.PropertyDiff{Kind: pulumirpc.PropertyDiff_Kind(d.Kind), InputDiff: d.InputDiff}
		resp.Diffs = append(resp.Diffs, k)
		if d.Kind.IsReplace() {
			resp.Replaces = append(resp.Replaces, k)
		}
	}
	return resp, nil
}

// runArgs is local/commandOutputs.go run()'s view of BaseInputs, the logging field and the
// previous BaseOutputs.
type runArgs struct {
	command     string
	dir         *string
	env         []string
	interpreter []string
	stdin       string
	logStdout   bool
	logStderr   bool
}

func argsFrom(in resource.PropertyMap, command string, prev resource.PropertyMap) runArgs {
	a := runArgs{command: command, env: os.Environ(), interpreter: []string{"/bin/sh", "-c"}}
	if d, ok := str(in, "dir"); ok {
		a.dir = &d
	}
	a.stdin, _ = str(in, "stdin")
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
	// AddPreviousOutputInEnv == nil || *AddPreviousOutputInEnv; each variable only if non-empty.
	addPrev := true
	if v := plain(in["addPreviousOutputInEnv"]); v.IsBool() {
		addPrev = v.BoolValue()
	}
	if addPrev && prev != nil {
		if s, _ := str(prev, "stdout"); s != "" {
			a.env = append(a.env, "PULUMI_COMMAND_STDOUT="+s)
		}
		if s, _ := str(prev, "stderr"); s != "" {
			a.env = append(a.env, "PULUMI_COMMAND_STDERR="+s)
		}
	}
	// local/logging.go: an unset logging logs both; any value other than the four names logs neither.
	a.logStdout, a.logStderr = true, true
	if l, ok := str(in, "logging"); ok {
		a.logStdout = l == "stdout" || l == "stdoutAndStderr"
		a.logStderr = l == "stderr" || l == "stdoutAndStderr"
	}
	return a
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// run is local/commandOutputs.go run(): stdout and stderr are captured whole (trailing "\n"
// trimmed), interleaved into the error text, and the streams chosen by `logging` are logged line by
// line as info status messages of the resource (util.LogOutput). A failure, including one to start
// (a missing dir), reads "<err>: running \"<command>\":\n<stdout+stderr>".
func (p *prov) run(ctx context.Context, urn string, a runArgs) (string, string, error) {
	args := append(append([]string{}, a.interpreter[1:]...), a.command)
	cmd := exec.CommandContext(ctx, a.interpreter[0], args...)
	if a.dir != nil {
		cmd.Dir = *a.dir
	} else {
		wd, err := os.Getwd()
		if err != nil {
			return "", "", err
		}
		cmd.Dir = wd
	}
	cmd.Env = a.env
	if a.stdin != "" {
		cmd.Stdin = strings.NewReader(a.stdin)
	}
	var stdout, stderr, both bytes.Buffer
	bothW := &lockedWriter{w: &both}
	logR, logW := io.Pipe()
	logWL := &lockedWriter{w: logW}
	outs := []io.Writer{&stdout, bothW}
	if a.logStdout {
		outs = append(outs, logWL)
	}
	errs := []io.Writer{&stderr, bothW}
	if a.logStderr {
		errs = append(errs, logWL)
	}
	cmd.Stdout, cmd.Stderr = io.MultiWriter(outs...), io.MultiWriter(errs...)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(logR)
		for sc.Scan() {
			if p.host != nil {
				_ = p.host.LogStatus(ctx, diag.Info, resource.URN(urn), sc.Text())
			}
		}
		// Upstream stops reading at a line over 64 KiB and the command then blocks on the pipe;
		// draining here is the one place this stand-in does not copy upstream.
		_, _ = io.Copy(io.Discard, logR)
	}()
	err := cmd.Start()
	if err == nil {
		err = cmd.Wait()
	}
	_ = logW.Close()
	<-done
	if err != nil {
		return "", "", fmt.Errorf("%w: running %q:\n%s", err, a.command, both.String())
	}
	return strings.TrimSuffix(stdout.String(), "\n"), strings.TrimSuffix(stderr.String(), "\n"), nil
}

// markSecrets applies pulumi-go-provider:infer/resource.go markSecret with the default secret flow
// (ensureDefaultSecrets; local.Command declares no WireDependencies): an output field takes its
// secretness only from the input field of the same name. Secrets nested in an input (one secret
// environment entry, one secret trigger) come back at the same paths because the output embeds the
// inputs and ende's encoder re-applies every secret it stripped (infer/internal/ende/ende.go); a
// wholly secret input makes the same-named output wholly secret. stdout, stderr, assets and archive
// have no same-named input, so they are never secret here, whatever is secret among the inputs;
// additionalSecretOutputs is the engine's business.
func markSecrets(out, inputs resource.PropertyMap) {
	for k, v := range out {
		in, ok := inputs[k]
		if !ok || v.IsSecret() || in.DeepEquals(v) {
			continue
		}
		if in.ContainsSecrets() {
			out[k] = resource.MakeSecret(v)
		}
	}
}

// outputs is CommandOutputs{CommandInputs: inputs, BaseOutputs: {stdout, stderr}} encoded.
func outputs(inputs resource.PropertyMap, fields map[resource.PropertyKey]string, stdout, stderr resource.PropertyValue,
) resource.PropertyMap {
	out := onlyInputs(inputs, fields).Copy()
	out["stdout"], out["stderr"] = stdout, stderr
	markSecrets(out, inputs)
	return out
}

// previewOutputs applies infer/resource.go markComputed (default computed flow: every output field
// depends on every input field): during a create preview an output that does not mirror an input
// is unknown; during an update preview it is unknown when an input is unknown or differs from the
// old state, else it keeps the old value.
func previewOutputs(out, inputs, oldState resource.PropertyMap, isCreate bool) {
	changed := isCreate
	if !isCreate {
		for k := range commandInputs {
			old, hadOld := oldState[k]
			if inputs[k].ContainsUnknowns() || (hadOld && !inputs[k].DeepEquals(old)) {
				changed = true
			}
		}
	}
	if !changed {
		return
	}
	for k, v := range out {
		if v.IsComputed() {
			continue
		}
		if in, ok := inputs[k]; ok && in.DeepEquals(v) {
			continue
		}
		out[k] = resource.MakeComputed(v)
	}
}

func (p *prov) Create(ctx context.Context, req *pulumirpc.CreateRequest) (*pulumirpc.CreateResponse, error) {
	if err := checkType(req.GetType(), req.GetUrn()); err != nil {
		return nil, err
	}
	in, err := unmarshal(req.GetProperties())
	if err != nil {
		return nil, err
	}
	// resource.NewUniqueHex(name, 8, 0), as local/commandController.go Create.
	id, err := resource.NewUniqueHex(resource.URN(req.GetUrn()).Name(), 8, 0)
	if err != nil {
		return nil, err
	}
	var so, se string
	if c, ok := str(in, "create"); ok && !req.GetPreview() {
		if so, se, err = p.run(ctx, req.GetUrn(), argsFrom(in, c, nil)); err != nil {
			return nil, err // a plain error: nothing is saved and the next up runs create again
		}
	}
	out := outputs(in, commandInputs, resource.NewStringProperty(so), resource.NewStringProperty(se))
	if req.GetPreview() {
		previewOutputs(out, in, nil, true)
	}
	props, err := marshal(out)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.CreateResponse{Id: id, Properties: props}, nil
}

// Update is local/commandController.go Update: the new state starts from the old stdout/stderr
// (so PULUMI_COMMAND_STDOUT is the previous run's), `update` runs if set, else `create`, and the
// run's output replaces them; with neither set, the old output stays.
func (p *prov) Update(ctx context.Context, req *pulumirpc.UpdateRequest) (*pulumirpc.UpdateResponse, error) {
	olds, err := unmarshal(req.GetOlds())
	if err != nil {
		return nil, err
	}
	news, err := unmarshal(req.GetNews())
	if err != nil {
		return nil, err
	}
	for _, k := range req.GetIgnoreChanges() { // infer/resource.go Update, top-level keys
		if v, ok := olds[resource.PropertyKey(k)]; ok {
			news[resource.PropertyKey(k)] = v
		}
	}
	soV, seV := plain(olds["stdout"]), plain(olds["stderr"])
	if !soV.IsString() {
		soV = resource.NewStringProperty("")
	}
	if !seV.IsString() {
		seV = resource.NewStringProperty("")
	}
	c, ok := str(news, "create")
	if u, hasUpdate := str(news, "update"); hasUpdate {
		c, ok = u, true
	}
	if ok && !req.GetPreview() {
		so, se, err := p.run(ctx, req.GetUrn(), argsFrom(news, c, olds))
		if err != nil {
			return nil, err // the old state stays; the next up tries again
		}
		soV, seV = resource.NewStringProperty(so), resource.NewStringProperty(se)
	}
	out := outputs(news, commandInputs, soV, seV)
	if req.GetPreview() {
		previewOutputs(out, news, olds, false)
	}
	props, err := marshal(out)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.UpdateResponse{Properties: props}, nil
}

// Delete is local/commandController.go Delete: the stored `delete`, with the stored inputs
// (environment, dir, interpreter, stdin, logging) and the stored stdout/stderr as the previous
// output, plus this process's current environment.
func (p *prov) Delete(ctx context.Context, req *pulumirpc.DeleteRequest) (*emptypb.Empty, error) {
	state, err := unmarshal(req.GetProperties())
	if err != nil {
		return nil, err
	}
	if c, ok := str(state, "delete"); ok {
		if _, _, err := p.run(ctx, req.GetUrn(), argsFrom(state, c, state)); err != nil {
			return nil, err
		}
	}
	return &emptypb.Empty{}, nil
}

func (p *prov) Read(_ context.Context, req *pulumirpc.ReadRequest) (*pulumirpc.ReadResponse, error) {
	// No CustomRead upstream: the stored state and inputs come back as they are (no drift detection).
	return &pulumirpc.ReadResponse{Id: req.GetId(), Properties: req.GetProperties(), Inputs: req.GetInputs()}, nil
}

// Invoke is pulumi-go-provider:infer/function.go Invoke for local.Run: decode failures come back
// as failures, then the command runs (also during previews) and the result is RunOutputs
// {RunInputs, BaseOutputs} encoded with the inputs' secrets re-applied and nothing else made secret.
func (p *prov) Invoke(ctx context.Context, req *pulumirpc.InvokeRequest) (*pulumirpc.InvokeResponse, error) {
	if req.GetTok() != runToken {
		return nil, fmt.Errorf("invoke %q is not supported by the nats-fly stand-in of pulumi-resource-command", req.GetTok())
	}
	in, err := unmarshal(req.GetArgs())
	if err != nil {
		return nil, err
	}
	if failures := decodeFailures(in, runInputs, runInputsType, "command"); len(failures) > 0 {
		return &pulumirpc.InvokeResponse{Failures: failures}, nil
	}
	for _, k := range []resource.PropertyKey{"assetPaths", "archivePaths"} {
		if v, ok := in[k]; ok && !v.IsNull() {
			return nil, fmt.Errorf("%s is not supported by the nats-fly stand-in of pulumi-resource-command", k)
		}
	}
	c, _ := str(in, "command")
	so, se, err := p.run(ctx, "", argsFrom(in, c, nil))
	if err != nil {
		return nil, err
	}
	out := onlyInputs(in, runInputs).Copy()
	out["stdout"], out["stderr"] = resource.NewStringProperty(so), resource.NewStringProperty(se)
	ret, err := marshal(out)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.InvokeResponse{Return: ret}, nil
}

