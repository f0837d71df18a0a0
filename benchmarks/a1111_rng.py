"""A1111's GPU noise source on a real device (issue 18), one short check for benchmarks/gpu.sh.

On CUDA: A1111's ``GPU`` source is torch's CUDA generator, and its ``NV`` source claims to give the
same first draw on the CPU. For a few seeds and latent sizes this prints the largest difference
between ``randn(seed, shape, source="GPU", device="cuda")`` and the NV draw, and fails (exit 1) when
it exceeds 1e-4 (the GPU computes Box–Muller in float32, A1111's NV in float64). It also reports,
without failing, whether the next draws (ancestral step noise, ENSD 0) agree, and checks the SDE
samplers' Brownian noise drawn on the GPU against its NV emulation on the CPU (``device="NV"``).
On the CPU (``--device cpu``, gpu.sh's dry run) it checks that the GPU source refuses with
DeviceUnavailableError and that NV and CPU noise are drawn.

    python -m benchmarks.a1111_rng --device cuda
"""

from __future__ import annotations

import argparse
import sys

import torch

from promptweights.a1111.rng import ImageRNG, brownian_noise_sampler, randn
from promptweights.errors import DeviceUnavailableError

SEEDS = (0, 1, 965400086, 2**32 + 5)
SHAPES = ((3, 4), (4, 64, 64), (4, 128, 128))
TOLERANCE = 1e-4


def _cuda_checks() -> int:
    failures = 0
    for shape in SHAPES:
        for seed in SEEDS:
            gpu = randn(seed, shape, source="GPU", device="cuda").cpu()
            nv = randn(seed, shape, source="NV")
            diff = float((gpu - nv).abs().max())
            state = "ok" if diff <= TOLERANCE else "FAILED"
            failures += state == "FAILED"
            where = f"seed {seed:<11} shape {shape!s:<15}"
            print(f"first draw  {where} max |GPU - NV| = {diff:.2e} {state}")
    latent = (4, 64, 64)
    gpu_rng = ImageRNG(latent, [7, 8], source="GPU", device="cuda")
    nv_rng = ImageRNG(latent, [7, 8], source="NV")
    for step in range(3):
        diff = float((gpu_rng.next().cpu() - nv_rng.next()).abs().max())
        what = "initial noise" if step == 0 else f"step noise {step}"
        print(f"ImageRNG {what:<14} batch of 2: max |GPU - NV| = {diff:.2e} (reported only)")
    x = torch.zeros(2, *latent, device="cuda")
    sampler = brownian_noise_sampler(x, torch.tensor(0.0292), torch.tensor(14.6146), [7, 8])
    noise = sampler(torch.tensor(14.6146), torch.tensor(7.0))
    print(f"Brownian noise on cuda: shape {tuple(noise.shape)}, std {float(noise.std()):.3f}")
    # device="NV": CUDA's numbers from Philox on the CPU, as the CUDA trees above drew them.
    emulated = brownian_noise_sampler(x.cpu(), 0.0292, 14.6146, [7, 8], device="NV")
    for start, end in ((14.6146, 7.0), (7.0, 1.0), (1.0, 0.0292)):
        on_gpu = sampler(torch.tensor(start), torch.tensor(end)).cpu()
        diff = float((on_gpu - emulated(torch.tensor(start), torch.tensor(end))).abs().max())
        state = "ok" if diff <= TOLERANCE else "FAILED"
        failures += state == "FAILED"
        print(f"Brownian {start}->{end}: max |cuda - NV emulation| = {diff:.2e} {state}")
    # device="cpu": trees drawn by the CPU generator, as A1111 on a CPU draws them.
    on_cpu = brownian_noise_sampler(x, 0.0292, 14.6146, [7, 8], device="cpu")(14.6146, 7.0)
    reference = brownian_noise_sampler(x.cpu(), 0.0292, 14.6146, [7, 8])(14.6146, 7.0)
    diff = float((on_cpu.cpu() - reference).abs().max())
    state = "ok" if diff <= 1e-6 else "FAILED"
    failures += state == "FAILED"
    print(f"Brownian noise drawn on the CPU for a cuda latent: max |diff| = {diff:.2e} {state}")
    return failures


def _cpu_checks() -> int:
    try:
        randn(0, (4, 8, 8), source="GPU")
    except DeviceUnavailableError as error:
        print(f"GPU source without CUDA refuses: {error}")
    else:
        print("FAILED: the GPU source drew noise without CUDA")
        return 1
    nv, cpu = randn(0, (4, 64, 64), source="NV"), randn(0, (4, 64, 64), source="CPU")
    print(f"NV and CPU noise drawn: std {float(nv.std()):.3f} and {float(cpu.std()):.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("a1111_rng: CUDA is not available; use --device cpu", file=sys.stderr)
        return 2
    failures = _cuda_checks() if args.device == "cuda" else _cpu_checks()
    print("a1111_rng:", "ok" if not failures else f"{failures} FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
