#!/bin/sh
# Boots the test guest on plain QEMU, without Alcove, through a BIOS boot
# sector (bootsector.s) that enters it as the VMM would. A sanity check of
# the boot path, the IDT and the tests that need no Alcove device (4-7, 11, and
# 1 up to the signature check; 2, 3 and 8 fail without the VMM's devices).
#   usage: images/testguest/qemu/run.sh TEST [QEMU ARGS...]
#   e.g.   run.sh 4 -cpu qemu64,+x2apic      (TCG)
#          run.sh 5 -accel kvm -cpu host      (x2APIC, TSC deadline)
# With KVM, test 10 needs -global kvm-apic.vapic=false: QEMU's TPR-patching
# port 0x7E rewrites guest memory when the scribbler writes it. Under this
# host's KVM, test 9 ends in a KVM "emulation failure" instead of a
# shutdown; TCG shows the triple fault.
# Console (port 0xE9) goes to stdout; the result ends QEMU through
# isa-debug-exit, whose status is (result << 1) | 1: 1 = pass.
set -eu
test_no=$1
shift
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
ram_bytes=$((64 << 20))

cargo +nightly build -q --manifest-path "$root/Cargo.toml" -p testguest --release --target x86_64-unknown-none
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
objcopy -O binary "$target/x86_64-unknown-none/release/testguest" "$out/guest.bin"
sectors=$(( ($(stat -c %s "$out/guest.bin") + 511) / 512 ))
as --32 --defsym TEST="$test_no" --defsym SECTORS="$sectors" --defsym RAM_BYTES="$ram_bytes" \
    -o "$out/boot.o" "$here/bootsector.s"
ld -m elf_i386 -Ttext=0x7c00 -e _start --oformat binary -o "$out/boot.bin" "$out/boot.o"
cat "$out/boot.bin" "$out/guest.bin" > "$out/disk.img"
truncate -s $(( (sectors + 1) * 512 )) "$out/disk.img"

status=0
timeout 60 qemu-system-x86_64 -display none -no-reboot -m $((ram_bytes >> 20)) -smp 2 \
    -drive file="$out/disk.img",format=raw,if=ide \
    -debugcon stdio -serial null -device isa-debug-exit,iobase=0xf4,iosize=4 "$@" || status=$?
case $status in
    1) echo "run.sh: test $test_no: PASS" ;;
    0) echo "run.sh: test $test_no: QEMU stopped without a result (shutdown/triple fault)" ;;
    124) echo "run.sh: test $test_no: timed out" ;;
    *) echo "run.sh: test $test_no: FAIL (exit status $status = (code << 1 | 1) & 0xff)" ;;
esac
