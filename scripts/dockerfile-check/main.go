// dockerfile-check lints a Dockerfile with BuildKit's own front end, the
// checks `docker build --check` runs, without a Docker engine: base images
// are not pulled (their configuration is taken as empty).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// offlineResolver answers every base image with an empty Linux image config.
type offlineResolver struct{}

func (offlineResolver) ResolveImageConfig(_ context.Context, ref string, _ sourceresolver.Opt) (string, digest.Digest, []byte, error) {
	img := dockerspec.DockerOCIImage{Image: ocispecs.Image{Platform: ocispecs.Platform{OS: "linux", Architecture: "amd64"}}}
	dt, err := json.Marshal(img)
	return ref, digest.FromBytes(dt), dt, err
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: dockerfile-check DOCKERFILE")
		os.Exit(2)
	}
	path := os.Args[1]
	dt, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx := context.Background()
	// The lint results refer to the Dockerfile by a source map, which needs
	// an LLB definition: an empty one does.
	def, err := llb.Scratch().Marshal(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	src := llb.NewSourceMap(nil, path, "Dockerfile", dt)
	src.Definition = def
	opt := dockerfile2llb.ConvertOpt{SourceMap: src, MetaResolver: offlineResolver{}}
	results, err := dockerfile2llb.DockerfileLint(ctx, dt, opt)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	failed := false
	for _, w := range results.Warnings {
		line := 0
		if len(w.Location.Ranges) > 0 {
			line = int(w.Location.Ranges[0].Start.Line)
		}
		fmt.Printf("%s:%d: %s: %s\n", path, line, w.RuleName, w.Detail)
		failed = true
	}
	if results.Error != nil {
		fmt.Printf("%s: %s\n", path, results.Error.Message)
		failed = true
	}
	if failed {
		os.Exit(1)
	}
	fmt.Printf("%s: no lint warnings\n", path)
}
