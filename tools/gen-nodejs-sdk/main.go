// nats-fly-gen-nodejs-sdk: writes the TypeScript (Node.js) SDK of a Pulumi package schema, offline.
//
// Not a language host and never named like one: it is one step of what the CLI does with one, for a
// machine where the Node.js host (github.com/pulumi/pulumi/sdk/nodejs/cmd/pulumi-language-nodejs/v3)
// cannot be built, because the Go module proxy reachable here refuses that module (403). It runs the
// same Go code the host would, from github.com/pulumi/pulumi/pkg/v3 at the CLI's version:
//
//  1. the CLI side, pkg/cmd/pulumi/packages: BindSpec (schema.BindSpec with AllowDanglingReferences);
//     `pulumi package gen-sdk --version` overrides the version; `pulumi package add` (InstallPackage)
//     sets SupportPack and asks for a local SDK; GenSDK sends pkg.MarshalJSON() to the host, with the
//     overlay files of <overlays>/nodejs as ExtraFiles and no LocalDependencies;
//  2. the host side, pulumi-language-nodejs main.go nodeLanguageHost.GeneratePackage: unmarshal the
//     schema into a schema.PackageSpec, schema.BindSpec it again (dangling references allowed; error
//     diagnostics end it), pkg/codegen/nodejs GeneratePackage("pulumi-language-nodejs", pkg,
//     extraFiles, localDependencies, local, loader), and write each file under the output directory
//     (directories 0700, files 0600).
//
// Where the host asks the CLI's schema loader (the engine's plugins) for other packages, this tool has
// none: a schema that refers to another package fails with a message naming it. The nats-fly schema
// refers to none.
//
// Usage: nats-fly-gen-nodejs-sdk [-local] [-support-pack] [-version V] [-overlays DIR] SCHEMA OUT
//
//	-local         a local SDK, as `pulumi package gen-sdk --local` and `pulumi package add` ask for
//	               (typescript a dependency, a postinstall script that compiles it to bin/)
//	-support-pack  as `pulumi package add`: the schema's version is the package's
//	-package-add   both of the above: what `pulumi package add <dir>` generates for a Node.js project
//
// OUT is emptied first, as GenSDK does (it removes the directory and creates it again).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/blang/semver"
	"github.com/hashicorp/hcl/v2"
	"github.com/pulumi/pulumi/pkg/v3/codegen/nodejs"
	"github.com/pulumi/pulumi/pkg/v3/codegen/schema"
)

const tool = "pulumi-language-nodejs" // the generator name upstream's host passes (it lands in file headers)

// noPackages is the schema loader: this tool resolves no other package (the host asks the engine).
type noPackages struct{}

func refuse(name string) error {
	return fmt.Errorf("the schema refers to package %q: nats-fly-gen-nodejs-sdk resolves no other packages "+
		"(a language host would ask the engine's plugins)", name)
}

func (noPackages) LoadPackage(pkg string, _ *semver.Version) (*schema.Package, error) {
	return nil, refuse(pkg)
}

func (noPackages) LoadPackageV2(_ context.Context, d *schema.PackageDescriptor) (*schema.Package, error) {
	return nil, refuse(d.Name)
}

func (noPackages) LoadPackageReference(pkg string, _ *semver.Version) (schema.PackageReference, error) {
	return nil, refuse(pkg)
}

func (noPackages) LoadPackageReferenceV2(_ context.Context, d *schema.PackageDescriptor) (schema.PackageReference, error) {
	return nil, refuse(d.Name)
}

func bind(spec schema.PackageSpec, loader schema.ReferenceLoader) (*schema.Package, hcl.Diagnostics, error) {
	pkg, diags, err := schema.BindSpec(spec, loader, schema.ValidationOptions{AllowDanglingReferences: true})
	if err != nil {
		return nil, diags, err
	}
	if diags.HasErrors() {
		return nil, diags, diags
	}
	return pkg, diags, nil
}

func printWarnings(diags hcl.Diagnostics) {
	for _, d := range diags {
		if d.Severity == hcl.DiagWarning {
			fmt.Fprintf(os.Stderr, "warning: %s\n", d.Error())
		}
	}
}

// readOverlays returns the files under DIR/nodejs, keyed by their slash path (GenSDK's overlays).
func readOverlays(dir string) (map[string][]byte, error) {
	files := map[string][]byte{}
	if dir == "" {
		return files, nil
	}
	fsys := os.DirFS(filepath.Join(dir, "nodejs"))
	err := fs.WalkDir(fsys, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(fsys, path)
		if err != nil {
			return fmt.Errorf("read overlay file %q: %w", path, err)
		}
		files[path] = data
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read overlay directory %q: %w", dir, err)
	}
	return files, nil
}

func run() error {
	// A flag set of our own: the global one also holds glog's flags (sdk/v3's logging).
	flags := flag.NewFlagSet(filepath.Base(os.Args[0]), flag.ExitOnError)
	local := flags.Bool("local", false, "generate a local SDK (as 'pulumi package gen-sdk --local')")
	supportPack := flags.Bool("support-pack", false, "set SupportPack, as 'pulumi package add' does")
	packageAdd := flags.Bool("package-add", false, "what 'pulumi package add' generates: -local -support-pack")
	version := flags.String("version", "", "override the schema's version (as 'pulumi package gen-sdk --version')")
	overlays := flags.String("overlays", "", "a folder whose nodejs/ files are added to the SDK")
	flags.Usage = func() {
		fmt.Fprintf(flags.Output(), "usage: %s [flags] SCHEMA.json OUT\n", flags.Name())
		flags.PrintDefaults()
	}
	_ = flags.Parse(os.Args[1:]) // ExitOnError: exits 2 on a bad flag
	if flags.NArg() != 2 {
		flags.Usage()
		os.Exit(2)
	}
	if *packageAdd {
		*local, *supportPack = true, true
	}
	schemaPath, out := flags.Arg(0), flags.Arg(1)

	raw, err := os.ReadFile(schemaPath)
	if err != nil {
		return err
	}
	var spec schema.PackageSpec
	if err := json.Unmarshal(raw, &spec); err != nil {
		return fmt.Errorf("%s: %w", schemaPath, err)
	}
	var loader schema.ReferenceLoader = schema.NewCachedLoader(noPackages{})

	// The CLI's side (packages.BindSpec, then gen-sdk's --version, package add's SupportPack).
	pkg, diags, err := bind(spec, loader)
	if err != nil {
		return fmt.Errorf("failed to bind schema: %w", err)
	}
	if *version != "" {
		v, err := semver.Parse(*version)
		if err != nil {
			return fmt.Errorf("invalid version %q: %w", *version, err)
		}
		pkg.Version = &v
	}
	if *supportPack {
		pkg.SupportPack = true
	}
	extraFiles, err := readOverlays(*overlays)
	if err != nil {
		return err
	}
	sent, err := pkg.MarshalJSON()
	if err != nil {
		return err
	}

	// The host's side (GeneratePackage).
	var received schema.PackageSpec
	if err := json.Unmarshal(sent, &received); err != nil {
		return err
	}
	pkg, hostDiags, err := bind(received, loader)
	diags = append(diags, hostDiags...)
	printWarnings(diags)
	if err != nil {
		return fmt.Errorf("generation failed: %w", err)
	}
	files, err := nodejs.GeneratePackage(tool, pkg, extraFiles, nil, *local, loader)
	if err != nil {
		return err
	}

	if err := os.RemoveAll(out); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.MkdirAll(out, 0o700); err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		path := filepath.Join(out, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return fmt.Errorf("could not create output directory %s: %w", filepath.Dir(name), err)
		}
		if err := os.WriteFile(path, files[name], 0o600); err != nil {
			return fmt.Errorf("could not write output file %s: %w", name, err)
		}
	}
	fmt.Fprintf(os.Stderr, "wrote the nodejs SDK of %s (%d files) to %s\n", pkg.Name, len(names), out)
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "nats-fly-gen-nodejs-sdk: %v\n", err)
		os.Exit(1)
	}
}
