#!/usr/bin/env python3
"""Boots the test guest N times with `ec1 --no-api --config-file --boot-timer` and
prints the median InstanceStart -> guest boot signal time (the test init writes the
signal right after its marker line) and ec1's own peak RSS (VmHWM of the ec1 process,
not the engine's).

Usage: scripts/measure-boot.py [N] [EC1_BINARY]   (after `cargo test -p ec1-testkit`,
which builds the test initramfs under target/testkit/)
"""
import glob, json, os, re, statistics, subprocess, sys, tempfile, time

n = int(sys.argv[1]) if len(sys.argv) > 1 else 5
ec1 = sys.argv[2] if len(sys.argv) > 2 else "target/release/ec1"
kernel = subprocess.check_output([ec1, "kernel", "path"], text=True).strip()
initrds = sorted(glob.glob("target/testkit/test-initramfs-*.cpio"), key=os.path.getmtime)
if not initrds:
    sys.exit("no test initramfs: run `cargo test -p ec1-testkit` first")
boots, rss = [], []
with tempfile.TemporaryDirectory() as d:
    cfg = os.path.join(d, "vm.json")
    json.dump({"boot-source": {"kernel_image_path": kernel, "initrd_path": initrds[-1],
                               "boot_args": "console=ttyS0 reboot=k panic=1 quiet"},
               "machine-config": {"vcpu_count": 1, "mem_size_mib": 128}}, open(cfg, "w"))
    for i in range(n):
        log = os.path.join(d, f"log{i}")
        open(log, "w").close()
        p = subprocess.Popen([ec1, "--no-api", "--boot-timer", "--config-file", cfg,
                              "--log-path", log, "--level", "Info"], stdout=subprocess.DEVNULL)
        hwm = 0
        while p.poll() is None:
            try:
                for line in open(f"/proc/{p.pid}/status"):
                    if line.startswith("VmHWM:"):
                        hwm = max(hwm, int(line.split()[1]))
            except OSError:
                pass
            time.sleep(0.005)
        m = re.search(r"Guest-boot-time =\s*(\d+) us", open(log).read())
        if p.returncode != 0 or not m:
            sys.exit(f"boot {i} failed (status {p.returncode})")
        boots.append(int(m.group(1)) / 1000)
        rss.append(hwm / 1024)
print(f"boots: {n}; InstanceStart -> guest marker: median {statistics.median(boots):.1f} ms "
      f"(min {min(boots):.1f}, max {max(boots):.1f}); ec1 peak RSS: median {statistics.median(rss):.1f} MiB "
      f"(max {max(rss):.1f})")
