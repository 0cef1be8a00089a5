// pulumi-language-python, nats-fly stand-in.
//
// The Go module proxy reachable here refuses the upstream host module
// (github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3, 403), so scripts/bootstrap
// builds this instead, against sdk/v3 and pkg/v3 at the CLI's version. It follows upstream
// pulumi:sdk/python/cmd/pulumi-language-python/main.go, read at commit
// a24f05cf40be8593f1cb471eb82f004353a75261 (sdk/.version 3.238.0: the newest version of that file
// found in the source index; named "upstream" below), and uses the same sdk pieces it uses:
// python/toolchain for virtualenvs and toolchains, the upstream pulumi-language-python-exec shim
// (sdk module) to run programs, pkg/codegen/python for SDK and program generation.
//
// Implemented: Run, InstallDependencies, GetRequiredPackages, RunPlugin (source-based plugins such
// as Python component packages), GeneratePackage and Link (what `pulumi package get-schema <dir>`
// and `pulumi package add <dir>` call), GenerateProgram and GenerateProject (`pulumi import`,
// `pulumi convert`), About, GetProgramDependencies, RuntimeOptionsPrompts, Handshake. Refused
// clearly (Unimplemented, or an error for a typechecker option): typecheckers, debugging
// (AttachDebugger), Pack, policy packs.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"

	"github.com/blang/semver"
	hclsyntax "github.com/pulumi/pulumi/pkg/v3/codegen/hcl2/syntax"
	"github.com/pulumi/pulumi/pkg/v3/codegen/pcl"
	codegen "github.com/pulumi/pulumi/pkg/v3/codegen/python"
	"github.com/pulumi/pulumi/pkg/v3/codegen/schema"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/logging"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/workspace"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Stamped with -ldflags "-X main.version=...".
var version = "3.0.0-dev"

// The exec shim's exit code after it already showed the user an actionable message.
const bailExitCode = 32

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
	engine  string
	shim    string
	tracing string
}

// main parses upstream main's flags with Go's flag package, as upstream does: -tracing, -version
// and -use-executor. Any other flag, such as -virtualenv, -root, -typechecker and -toolchain (which
// upstream dropped), exits 2 with the usage. -version prints the version and exits 0 before the
// executor is looked for. The engine address is the first argument after the flags.
func main() {
	tracing := flag.String("tracing", "", "Emit tracing to a Zipkin-compatible tracing endpoint")
	showVersion := flag.Bool("version", false, "Print the current plugin version and exit")
	givenExecutor := flag.String("use-executor", "",
		"Use the given program as the executor instead of looking for one on PATH")
	flag.Parse()
	if *showVersion {
		fmt.Println(version)
		os.Exit(0)
	}
	logging.InitLogging(false, 0, false)
	var engine string
	if args := flag.Args(); len(args) > 0 {
		engine = args[0]
	}
	shim := *givenExecutor
	if shim == "" {
		// By default the -exec script is installed next to the language host.
		exe, err := os.Executable()
		if err != nil {
			fmt.Fprintf(os.Stderr, "fatal: could not determine current executable: %v\n", err)
			os.Exit(1)
		}
		shim = filepath.Join(filepath.Dir(exe), "pulumi-language-python-exec")
		if _, err := os.Stat(shim); os.IsNotExist(err) {
			fmt.Fprintf(os.Stderr, "fatal: missing executor %s: %v\n", shim, err)
			os.Exit(1)
		}
	}
	h := &host{engine: engine, shim: shim, tracing: *tracing}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if engine != "" {
		if err := rpcutil.Healthcheck(ctx, engine, 5*time.Minute, cancel); err != nil {
			fmt.Fprintf(os.Stderr, "fatal: could not start health check host RPC server: %v\n", err)
			os.Exit(1)
		}
	}
	stop := make(chan bool)
	go func() { <-ctx.Done(); close(stop) }()
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Cancel: stop,
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, h)
			return nil
		},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "fatal: could not start language host RPC server: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		fmt.Fprintf(os.Stderr, "fatal: language host RPC stopped serving: %v\n", err)
		os.Exit(1)
	}
}

// parseOptions is upstream's parseOptions. An absent `toolchain` stays the sdk's zero value, Auto
// (python/toolchain: uv if a uv.lock is found up from the program, poetry for a poetry.lock, else
// pip).
func parseOptions(info *pulumirpc.ProgramInfo) (toolchain.PythonOptions, error) {
	if info == nil {
		return toolchain.PythonOptions{}, errors.New("missing program info")
	}
	o := toolchain.PythonOptions{Root: info.GetRootDirectory(), ProgramDir: info.GetProgramDirectory()}
	opts := map[string]any{}
	if info.GetOptions() != nil {
		opts = info.GetOptions().AsMap()
	}
	if v, ok := opts["virtualenv"]; ok {
		s, ok := v.(string)
		if !ok {
			return o, errors.New("virtualenv option must be a string")
		}
		o.Virtualenv = s
	}
	if v, ok := opts["typechecker"]; ok {
		s, ok := v.(string)
		if !ok {
			return o, errors.New("typechecker option must be a string")
		}
		switch s {
		case "mypy":
			o.Typechecker = toolchain.TypeCheckerMypy
		case "pyright":
			o.Typechecker = toolchain.TypeCheckerPyright
		default:
			return o, fmt.Errorf("unsupported typechecker option: %s", s)
		}
	}
	if v, ok := opts["toolchain"]; ok {
		s, ok := v.(string)
		if !ok {
			return o, errors.New("toolchain option must be a string")
		}
		switch s {
		case "pip":
			o.Toolchain = toolchain.Pip
		case "poetry":
			o.Toolchain = toolchain.Poetry
		case "uv":
			o.Toolchain = toolchain.Uv
		default:
			return o, fmt.Errorf("unsupported toolchain option: %s", s)
		}
	}
	return o, nil
}

// pluginOptions applies upstream parseOptions' rule for plugins (RunPlugin, InstallDependencies with
// IsPlugin): plugins never run in the global or ambient Python, so with the pip toolchain or none
// given (Auto, the zero value) the virtualenv defaults to `venv`.
func pluginOptions(o toolchain.PythonOptions) toolchain.PythonOptions {
	if o.Virtualenv == "" && (o.Toolchain == toolchain.Pip || o.Toolchain == toolchain.Auto) {
		o.Virtualenv = "venv"
	}
	return o
}

func (h *host) Handshake(_ context.Context, req *pulumirpc.LanguageHandshakeRequest) (*pulumirpc.LanguageHandshakeResponse, error) {
	if req.GetEngineAddress() != "" {
		h.engine = req.GetEngineAddress()
	}
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *host) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version}, nil
}

// RuntimeOptionsPrompts asks for nothing; upstream offers toolchain/virtualenv choices to `pulumi new`.
func (h *host) RuntimeOptionsPrompts(context.Context, *pulumirpc.RuntimeOptionsRequest) (*pulumirpc.RuntimeOptionsResponse, error) {
	return &pulumirpc.RuntimeOptionsResponse{}, nil
}

// engineWriters are upstream's createEngineWriters: ephemeral engine log messages (info, error).
func (h *host) engineWriters(ctx context.Context) (io.Writer, io.Writer, io.Closer, error) {
	conn, err := grpc.NewClient(h.engine, grpc.WithTransportCredentials(insecure.NewCredentials()),
		rpcutil.GrpcChannelOptions())
	if err != nil {
		return nil, nil, nil, fmt.Errorf("language host could not make connection to engine: %w", err)
	}
	client := pulumirpc.NewEngineClient(conn)
	id := rand.Int31() //nolint:gosec
	return &logWriter{ctx, client, id, pulumirpc.LogSeverity_INFO},
		&logWriter{ctx, client, id, pulumirpc.LogSeverity_ERROR}, conn, nil
}

type logWriter struct {
	ctx      context.Context
	client   pulumirpc.EngineClient
	streamID int32
	severity pulumirpc.LogSeverity
}

func (w *logWriter) Write(p []byte) (int, error) {
	_, err := w.client.Log(w.ctx, &pulumirpc.LogRequest{
		Message: strings.ToValidUTF8(string(p), "\uFFFD"), Ephemeral: true, StreamId: w.streamID, Severity: w.severity,
	})
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// These packages are known to have no plugin (upstream packagesWithoutPlugins).
var packagesWithoutPlugins = map[string]bool{
	"pulumi-policy": true, "pulumi_policy": true, "pulumi-esc-sdk": true, "pulumi_esc_sdk": true,
}

// Lists the installed distributions with their pulumi-plugin.json, looked up as upstream's
// readPulumiPluginJSON does: <location>/<name with - as _>/pulumi-plugin.json, name PEP 503-normalized.
const listPackagesPy = `
import importlib.metadata as md, json, re
out = []
for d in md.distributions():
    name = re.sub(r"[-_.]+", "-", (d.metadata["Name"] or "").lower())
    if not name:
        continue
    plugin = None
    f = d.locate_file(name.replace("-", "_") + "/pulumi-plugin.json")
    try:
        plugin = json.loads(open(f).read())
    except FileNotFoundError:
        pass
    except Exception as e:
        plugin = {"__error__": str(e)}
    out.append({"name": name, "version": d.version, "plugin": plugin})
print(json.dumps(out))
`

type pythonPackage struct {
	Name    string         `json:"name"`
	Version string         `json:"version"`
	Plugin  map[string]any `json:"plugin"`
}

// GetRequiredPackages is upstream's: make sure the virtualenv exists, list the installed packages,
// keep the Pulumi ones (a pulumi-plugin.json, or a name starting "pulumi-") and turn each into a
// package dependency (determinePackageDependency).
func (h *host) GetRequiredPackages(ctx context.Context, req *pulumirpc.GetRequiredPackagesRequest) (*pulumirpc.GetRequiredPackagesResponse, error) {
	opts, err := parseOptions(req.GetInfo())
	if err != nil {
		return nil, err
	}
	tc, err := toolchain.ResolveToolchain(opts)
	if err != nil {
		return nil, err
	}
	stdout, stderr, closer, err := h.engineWriters(ctx)
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	if err := tc.EnsureVenv(ctx, req.GetInfo().GetProgramDirectory(), false, true, stdout, stderr); err != nil {
		return nil, err
	}
	cmd, err := tc.Command(ctx, "-c", listPackagesPy)
	if err != nil {
		return nil, err
	}
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("listing the installed python packages: %w", err)
	}
	var pkgs []pythonPackage
	if err := json.Unmarshal(out, &pkgs); err != nil {
		return nil, fmt.Errorf("parsing the installed python packages: %w", err)
	}
	sort.Slice(pkgs, func(i, j int) bool { return pkgs[i].Name < pkgs[j].Name })
	resp := &pulumirpc.GetRequiredPackagesResponse{Packages: []*pulumirpc.PackageDependency{}}
	for _, p := range pkgs {
		if p.Plugin == nil && !strings.HasPrefix(p.Name, "pulumi-") || packagesWithoutPlugins[p.Name] {
			continue
		}
		dep, err := packageDependency(p)
		if err != nil {
			return nil, err
		}
		if dep != nil {
			resp.Packages = append(resp.Packages, dep)
		}
	}
	return resp, nil
}

func packageDependency(p pythonPackage) (*pulumirpc.PackageDependency, error) {
	var name, ver, server string
	var param *pulumirpc.PackageParameterization
	if p.Plugin != nil {
		if e, ok := p.Plugin["__error__"].(string); ok {
			return nil, errors.New(e)
		}
		if res, _ := p.Plugin["resource"].(bool); !res {
			return nil, nil // resource: false says the package has no plugin
		}
		name, _ = p.Plugin["name"].(string)
		ver, _ = p.Plugin["version"].(string)
		server, _ = p.Plugin["server"].(string)
		if pm, ok := p.Plugin["parameterization"].(map[string]any); ok {
			param = &pulumirpc.PackageParameterization{}
			param.Name, _ = pm["name"].(string)
			param.Version, _ = pm["version"].(string)
			if v, ok := pm["value"].(string); ok { // plugin.PulumiPluginJSON's []byte: base64 in the JSON
				b, err := base64.StdEncoding.DecodeString(v)
				if err != nil {
					return nil, fmt.Errorf("%s: parameterization value: %w", p.Name, err)
				}
				param.Value = b
			}
		}
	}
	if name == "" {
		name = strings.TrimPrefix(p.Name, "pulumi-")
	}
	if ver == "" {
		v, err := pluginVersion(p.Version)
		if err != nil {
			return nil, nil // the plugin version cannot be told from the package version: skip it
		}
		ver = v
	}
	if !strings.HasPrefix(ver, "v") {
		ver = "v" + ver
	}
	return &pulumirpc.PackageDependency{Name: name, Version: ver, Kind: "resource", Server: server,
		Parameterization: param}, nil
}

// pluginVersion is upstream's determinePluginVersion: a PEP 440 version N(.N)*[{a|b|rc}N][.postN][.devN]
// as a plugin version (at least 3 segments; 1.2.3a4 -> 1.2.3-alpha.4; .post/.dev -> +postN/devN).
func pluginVersion(v string) (string, error) {
	if v == "" {
		return "", errors.New("cannot parse empty string")
	}
	for i := 0; i < len(v); i++ {
		if v[i] > unicode.MaxASCII {
			return "", fmt.Errorf("byte %d is not ascii", i)
		}
	}
	num := func(s string) (string, string) {
		i := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return s[:i], s[i:]
	}
	if n, rest := num(v); n != "" && strings.HasPrefix(rest, "!") {
		return "", errors.New("epochs are not supported")
	}
	var segs []string
	rest, dot := v, false
	for {
		var n string
		if n, rest = num(rest); n == "" {
			break
		}
		dot = false
		segs = append(segs, n)
		if !strings.HasPrefix(rest, ".") {
			break
		}
		rest, dot = rest[1:], true
	}
	if dot {
		rest = "." + rest
	}
	for len(segs) < 3 {
		segs = append(segs, "0")
	}
	if rest == "" {
		return strings.Join(segs, "."), nil
	}
	var pre, post, dev string
	switch {
	case rest[0] == 'a':
		pre, rest = num(rest[1:])
		pre = "-alpha." + pre
	case rest[0] == 'b':
		pre, rest = num(rest[1:])
		pre = "-beta." + pre
	case strings.HasPrefix(rest, "rc"):
		pre, rest = num(rest[2:])
		pre = "-rc." + pre
	}
	if strings.HasPrefix(rest, ".post") {
		post, rest = num(rest[5:])
		post = "+post" + post
	}
	if strings.HasPrefix(rest, ".dev") {
		dev, rest = num(rest[4:])
		join := ""
		if post == "" {
			join = "+"
		}
		dev = join + "dev" + dev
	}
	if rest != "" {
		return "", fmt.Errorf("'%s' still unparsed", rest)
	}
	return strings.Join(segs, ".") + pre + post + dev, nil
}

// Run is upstream's Run: `python <exec shim> --monitor … <entry point> <args>` through the
// toolchain, after checking its virtualenv; PULUMI_CONFIG/PULUMI_CONFIG_SECRET_KEYS in the
// environment; exit code 32 means the program already reported its error (bail).
func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	opts, err := parseOptions(req.GetInfo())
	if err != nil {
		return nil, err
	}
	if req.GetAttachDebugger() {
		return &pulumirpc.RunResponse{Error: "debugging is not supported by the nats-fly stand-in of pulumi-language-python"}, nil
	}
	if opts.Typechecker != toolchain.TypeCheckerNone {
		return nil, errors.New("the typechecker option is not supported by the nats-fly stand-in of pulumi-language-python")
	}
	var args []string
	arg := func(k, v string) {
		if v != "" {
			args = append(args, "--"+k, v)
		}
	}
	arg("monitor", req.GetMonitorAddress())
	arg("engine", h.engine)
	arg("project", req.GetProject())
	arg("root_directory", req.GetInfo().GetRootDirectory())
	arg("stack", req.GetStack())
	arg("pwd", req.GetPwd())
	arg("dry_run", strconv.FormatBool(req.GetDryRun()))
	arg("parallel", strconv.Itoa(int(req.GetParallel())))
	arg("tracing", h.tracing)
	arg("organization", req.GetOrganization())
	args = append(append([]string{h.shim}, args...), req.GetInfo().GetEntryPoint())
	args = append(args, req.GetArgs()...)

	tc, err := toolchain.ResolveToolchain(opts)
	if err != nil {
		return nil, err
	}
	if err := tc.ValidateVenv(ctx); err != nil {
		return nil, err
	}
	cmd, err := tc.Command(ctx, args...)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	if cfg := req.GetConfig(); cfg != nil {
		b, err := json.Marshal(cfg)
		if err != nil {
			return nil, fmt.Errorf("failed to serialize configuration: %w", err)
		}
		env = append(env, "PULUMI_CONFIG="+string(b))
	}
	keys := "[]"
	if k := req.GetConfigSecretKeys(); k != nil {
		b, err := json.Marshal(k)
		if err != nil {
			return nil, fmt.Errorf("failed to serialize configuration secret keys: %w", err)
		}
		keys = string(b)
	}
	cmd.Env = append(env, "PULUMI_CONFIG_SECRET_KEYS="+keys)
	if err := cmd.Run(); err != nil {
		_ = os.Stdout.Sync()
		_ = os.Stderr.Sync()
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			if status, ok := exitErr.Sys().(syscall.WaitStatus); ok {
				switch status.ExitStatus() {
				case 0:
					return &pulumirpc.RunResponse{Error: fmt.Sprintf("program exited unexpectedly: %v", exitErr)}, nil
				case bailExitCode:
					return &pulumirpc.RunResponse{Bail: true}, nil
				default:
					return &pulumirpc.RunResponse{Error: fmt.Sprintf(
						"program exited with non-zero exit code: %d", status.ExitStatus())}, nil
				}
			}
			return &pulumirpc.RunResponse{Error: fmt.Sprintf("program exited unexpectedly: %v", exitErr)}, nil
		}
		return &pulumirpc.RunResponse{Error: fmt.Sprintf(
			"problem executing program (could not run language executor): %v", err)}, nil
	}
	return &pulumirpc.RunResponse{}, nil
}

// InstallDependencies is upstream's: for a plugin, the virtualenv defaults to `venv` (pluginOptions),
// and a plugin that is a buildable package (pyproject.toml with a build backend, run through
// pulumi.run.plugin) is installed into it too, before its dependencies; the toolchain's
// InstallPackage does that (pip: `pip install <dir>`; uv: nothing, as its sync installs it).
func (h *host) InstallDependencies(req *pulumirpc.InstallDependenciesRequest, server pulumirpc.LanguageRuntime_InstallDependenciesServer) error {
	opts, err := parseOptions(req.GetInfo())
	if err != nil {
		return err
	}
	if req.GetIsPlugin() {
		opts = pluginOptions(opts)
	}
	closer, stdout, stderr, err := rpcutil.MakeInstallDependenciesStreams(server, req.GetIsTerminal())
	if err != nil {
		return err
	}
	defer closer.Close()
	_, _ = stdout.Write([]byte("Installing dependencies...\n\n"))
	tc, err := toolchain.ResolveToolchain(opts)
	if err != nil {
		return err
	}
	dir := req.GetInfo().GetProgramDirectory()
	if req.GetIsPlugin() {
		buildable, err := toolchain.IsBuildablePackage(dir)
		if err != nil {
			return fmt.Errorf("checking if plugin is a buildable package: %w", err)
		}
		if buildable {
			if err := tc.InstallPackage(server.Context(), dir, req.GetUseLanguageVersionTools(), true,
				stdout, stderr); err != nil {
				return err
			}
		}
	}
	if err := tc.InstallDependencies(server.Context(), dir, req.GetUseLanguageVersionTools(), true,
		stdout, stderr); err != nil {
		return err
	}
	_, _ = stdout.Write([]byte("Finished installing dependencies\n\n"))
	return closer.Close()
}

// RunPlugin is upstream's: a plugin runs in its own virtualenv (pluginOptions), from its
// directory's __main__.py (`python <plugin dir> <args>`), or, without one, as
// `python -m pulumi.run.plugin <pyproject name> <args>` when its pulumi package has that module
// and the directory is a buildable package. Its stdout/stderr stream back; its exit code ends the
// stream. The engine's environment (req.Env) is appended to the toolchain's.
func (h *host) RunPlugin(req *pulumirpc.RunPluginRequest, server pulumirpc.LanguageRuntime_RunPluginServer) error {
	opts, err := parseOptions(req.GetInfo())
	if err != nil {
		return err
	}
	if req.GetAttachDebugger() {
		return errors.New("debugging is not supported by the nats-fly stand-in of pulumi-language-python")
	}
	opts = pluginOptions(opts)
	tc, err := toolchain.ResolveToolchain(opts)
	if err != nil {
		return err
	}
	hasMainPy := true
	if _, err := os.Stat(filepath.Join(opts.Root, "__main__.py")); err != nil {
		if !os.IsNotExist(err) {
			return fmt.Errorf("looking for __main__.py: %w", err)
		}
		hasMainPy = false
	}
	hasPluginRunModule := true
	check, err := tc.Command(server.Context(), "-c", "import pulumi.run.plugin")
	if err != nil {
		return err
	}
	if out, err := check.CombinedOutput(); err != nil && strings.Contains(string(out), "ModuleNotFoundError") {
		hasPluginRunModule = false
	}
	var cmd *exec.Cmd
	if hasPluginRunModule && !hasMainPy {
		buildable, err := toolchain.IsBuildablePackage(opts.Root)
		if err != nil {
			return fmt.Errorf("checking if plugin is a buildable package: %w", err)
		}
		if !buildable {
			return errors.New("plugin is not runnable, it provides neither __main__.py nor a buildable pyproject.toml")
		}
		pyproject, err := toolchain.LoadPyproject(opts.Root)
		if err != nil {
			return fmt.Errorf("loading pyproject: %w", err)
		}
		if cmd, err = tc.ModuleCommand(server.Context(), "pulumi.run.plugin",
			append([]string{pyproject.Project.Name}, req.GetArgs()...)...); err != nil {
			return err
		}
	} else if cmd, err = tc.Command(server.Context(),
		append([]string{req.GetInfo().GetProgramDirectory()}, req.GetArgs()...)...); err != nil {
		return err
	}
	closer, stdout, stderr, err := rpcutil.MakeRunPluginStreams(server, false)
	if err != nil {
		return err
	}
	defer closer.Close()
	cmd.Dir = req.GetPwd()
	cmd.Env = append(cmd.Env, req.GetEnv()...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			if status, ok := exitErr.Sys().(syscall.WaitStatus); ok {
				return server.Send(&pulumirpc.RunPluginResponse{
					Output: &pulumirpc.RunPluginResponse_Exitcode{Exitcode: int32(status.ExitStatus())}, //nolint:gosec
				})
			}
			return fmt.Errorf("program exited unexpectedly: %w", exitErr)
		}
		return fmt.Errorf("problem executing plugin program (could not run language executor): %w", err)
	}
	return closer.Close()
}

// GeneratePackage is upstream's: bind the schema (dangling references allowed) with the engine's
// schema loader, generate the Python SDK with pkg/codegen/python and write it into req.Directory.
func (h *host) GeneratePackage(_ context.Context, req *pulumirpc.GeneratePackageRequest) (*pulumirpc.GeneratePackageResponse, error) {
	loader, err := schema.NewLoaderClient(req.GetLoaderTarget())
	if err != nil {
		return nil, err
	}
	defer loader.Close()
	var spec schema.PackageSpec
	if err := json.Unmarshal([]byte(req.GetSchema()), &spec); err != nil {
		return nil, err
	}
	pkg, diags, err := schema.BindSpec(spec, schema.NewCachedLoader(loader), schema.ValidationOptions{
		AllowDanglingReferences: true,
	})
	if err != nil {
		return nil, err
	}
	rpcDiags := plugin.HclDiagnosticsToRPCDiagnostics(diags)
	if diags.HasErrors() {
		return &pulumirpc.GeneratePackageResponse{Diagnostics: rpcDiags}, nil
	}
	files, err := codegen.GeneratePackage("pulumi-language-python", pkg, req.GetExtraFiles(), schema.NewCachedLoader(loader))
	if err != nil {
		return nil, err
	}
	for name, data := range files {
		out := filepath.Join(req.GetDirectory(), name)
		if err := os.MkdirAll(filepath.Dir(out), 0o700); err != nil {
			return nil, fmt.Errorf("could not create output directory %s: %w", filepath.Dir(name), err)
		}
		if err := os.WriteFile(out, data, 0o600); err != nil {
			return nil, fmt.Errorf("could not write output file %s: %w", name, err)
		}
	}
	return &pulumirpc.GeneratePackageResponse{Diagnostics: rpcDiags}, nil
}

// GenerateProgram is upstream's: parse the PCL sources, bind them with the engine's schema loader
// (output-versioned invokes preferred, as upstream does for Python; non-strict unless asked), and
// generate the Python program with pkg/codegen/python. Binding errors come back as diagnostics.
// `pulumi import` calls it to print the code of what it imported.
func (h *host) GenerateProgram(_ context.Context, req *pulumirpc.GenerateProgramRequest) (*pulumirpc.GenerateProgramResponse, error) {
	loader, err := schema.NewLoaderClient(req.GetLoaderTarget())
	if err != nil {
		return nil, err
	}
	defer loader.Close()
	parser := hclsyntax.NewParser()
	for path, contents := range req.GetSource() {
		if err := parser.ParseFile(strings.NewReader(contents), path); err != nil {
			return nil, err
		}
		if diags := parser.Diagnostics; diags.HasErrors() {
			return nil, diags
		}
	}
	program, diags, err := pcl.BindProgram(parser.Files, schema.NewCachedLoader(loader),
		bindOptions(req.GetStrict())...)
	if err != nil {
		return nil, err
	}
	rpcDiags := plugin.HclDiagnosticsToRPCDiagnostics(diags)
	if diags.HasErrors() {
		return &pulumirpc.GenerateProgramResponse{Diagnostics: rpcDiags}, nil
	}
	if program == nil {
		return nil, errors.New("internal error program was nil")
	}
	files, diags, err := codegen.GenerateProgram(program)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.GenerateProgramResponse{
		Source: files, Diagnostics: append(rpcDiags, plugin.HclDiagnosticsToRPCDiagnostics(diags)...),
	}, nil
}

// GenerateProject is upstream's: bind the PCL directory and write a whole Python project (Pulumi.yaml,
// requirements, __main__.py) with pkg/codegen/python, as `pulumi convert --language python` asks.
// Upstream passes an empty typechecker and toolchain outside its conformance tests.
func (h *host) GenerateProject(_ context.Context, req *pulumirpc.GenerateProjectRequest) (*pulumirpc.GenerateProjectResponse, error) {
	loader, err := schema.NewLoaderClient(req.GetLoaderTarget())
	if err != nil {
		return nil, err
	}
	defer loader.Close()
	program, diags, err := pcl.BindDirectory(req.GetSourceDirectory(), schema.NewCachedLoader(loader),
		bindOptions(req.GetStrict())...)
	if err != nil {
		return nil, err
	}
	rpcDiags := plugin.HclDiagnosticsToRPCDiagnostics(diags)
	if diags.HasErrors() {
		return &pulumirpc.GenerateProjectResponse{Diagnostics: rpcDiags}, nil
	}
	var project workspace.Project
	if err := json.Unmarshal([]byte(req.GetProject()), &project); err != nil {
		return nil, err
	}
	if err := codegen.GenerateProject(req.GetTargetDirectory(), project, program, req.GetLocalDependencies(),
		"", ""); err != nil {
		return nil, err
	}
	return &pulumirpc.GenerateProjectResponse{Diagnostics: rpcDiags}, nil
}

// bindOptions are upstream's for Python: output-versioned invokes preferred, non-strict binding
// unless the request is strict.
func bindOptions(strict bool) []pcl.BindOption {
	opts := []pcl.BindOption{pcl.PreferOutputVersionedInvokes}
	if !strict {
		opts = append(opts, pcl.NonStrictBindOptions()...)
	}
	return opts
}

// Link is upstream's: each generated SDK goes into the program's dependency file with the
// toolchain's LinkPackages (python/toolchain: pip rewrites requirements.txt, replacing a line naming
// the same package; poetry and uv add a path dependency), keyed by the SDK's Python package name (the
// schema's language.python.packageName, else codegen's PyPack(namespace, name), as GeneratePackage
// names it); the `pulumi` SDK itself links as `pulumi`. A poetry or uv program that has no
// pyproject.toml yet links into requirements.txt as pip would (upstream: pulumi/pulumi#19763). The CLI
// then calls InstallDependencies. The instructions list one import line per SDK, in request order.
func (h *host) Link(ctx context.Context, req *pulumirpc.LinkRequest) (*pulumirpc.LinkResponse, error) {
	opts, err := parseOptions(req.GetInfo())
	if err != nil {
		return nil, err
	}
	loader, err := schema.NewLoaderClient(req.GetLoaderTarget())
	if err != nil {
		return nil, err
	}
	defer loader.Close()
	cached := schema.NewCachedLoader(loader)
	instructions := "You can import the SDK in your Python code with:\n\n"
	if len(req.GetPackages()) > 1 {
		instructions = "You can import the SDKs in your Python code with:\n\n"
	}
	packages := map[string]string{}
	for _, dep := range req.GetPackages() {
		if dep.GetPackage().GetName() == "pulumi" {
			packages["pulumi"] = dep.GetPath()
			continue
		}
		pkgRef, err := schema.LoadPackageReferenceV2(ctx, cached, packageDescriptor(dep.GetPackage()))
		if err != nil {
			return nil, err
		}
		pkg, err := pkgRef.Definition()
		if err != nil {
			return nil, err
		}
		if err := pkg.ImportLanguages(map[string]schema.Language{"python": codegen.Importer}); err != nil {
			return nil, err
		}
		packageName := codegen.PyPack(pkgRef.Namespace(), pkgRef.Name())
		importName := strings.ReplaceAll(pkgRef.Name(), "-", "_")
		if info, ok := pkg.Language["python"].(codegen.PackageInfo); ok && info.PackageName != "" {
			packageName, importName = info.PackageName, info.PackageName
		}
		packages[packageName] = dep.GetPath()
		instructions += fmt.Sprintf("  import %s as %s\n", packageName, importName)
	}
	if opts.Toolchain != toolchain.Pip {
		if _, err := os.Stat(filepath.Join(req.GetInfo().GetProgramDirectory(), "pyproject.toml")); os.IsNotExist(err) {
			if _, err := os.Stat(filepath.Join(req.GetInfo().GetProgramDirectory(), "requirements.txt")); os.IsNotExist(err) {
				return nil, fmt.Errorf("no pyproject.toml or requirements.txt found in %s", req.GetInfo().GetProgramDirectory())
			}
			opts.Toolchain = toolchain.Pip
		}
	}
	tc, err := toolchain.ResolveToolchain(opts)
	if err != nil {
		return nil, err
	}
	if err := tc.LinkPackages(ctx, packages); err != nil {
		return nil, fmt.Errorf("linking packages: %w", err)
	}
	return &pulumirpc.LinkResponse{ImportInstructions: instructions}, nil
}

// packageDescriptor is the package a Link request names, as upstream reads it: a version or
// parameterization version that is not semver is left out rather than refused.
func packageDescriptor(p *pulumirpc.PackageDependency) *schema.PackageDescriptor {
	desc := &schema.PackageDescriptor{Name: p.GetName(), DownloadURL: p.GetServer()}
	if v, err := semver.New(p.GetVersion()); err == nil {
		desc.Version = v
	}
	if param := p.GetParameterization(); param != nil {
		desc.Parameterization = &schema.ParameterizationDescriptor{Name: param.GetName(), Value: param.GetValue()}
		if v, err := semver.New(param.GetVersion()); err == nil {
			desc.Parameterization.Version = *v
		}
	}
	return desc
}

func (h *host) About(ctx context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	opts := toolchain.PythonOptions{Toolchain: toolchain.Pip} // upstream: no Info means the default python
	if req.GetInfo() != nil {
		var err error
		if opts, err = parseOptions(req.GetInfo()); err != nil {
			return nil, err
		}
	}
	tc, err := toolchain.ResolveToolchain(opts)
	if err != nil {
		return nil, err
	}
	info, err := tc.About(ctx)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.AboutResponse{Executable: info.PythonExecutable, Version: info.PythonVersion.String()}, nil
}

func (h *host) GetProgramDependencies(ctx context.Context, req *pulumirpc.GetProgramDependenciesRequest) (*pulumirpc.GetProgramDependenciesResponse, error) {
	opts, err := parseOptions(req.GetInfo())
	if err != nil {
		return nil, err
	}
	tc, err := toolchain.ResolveToolchain(opts)
	if err != nil {
		return nil, err
	}
	deps, err := tc.ListPackages(ctx, req.GetTransitiveDependencies())
	if err != nil {
		return nil, fmt.Errorf("failed to get python dependencies: %w", err)
	}
	resp := &pulumirpc.GetProgramDependenciesResponse{}
	for _, d := range deps {
		resp.Dependencies = append(resp.Dependencies, &pulumirpc.DependencyInfo{Name: d.Name, Version: d.Version})
	}
	return resp, nil
}
