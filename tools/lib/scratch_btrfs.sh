# shellcheck shell=bash
# A Btrfs volume for a script's run: a sparse file in a fresh directory, on
# a loop device, formatted and mounted at DIR/mnt; scratch_btrfs_remove
# undoes it all (call it from the script's EXIT trap). Needs root.

# scratch_btrfs_make PARENT PREFIX MIB: sets scratch_dir (the directory,
# under PARENT), scratch_loop and scratch_mnt.
scratch_btrfs_make() {
	scratch_dir=$(mktemp -d "$1/$2.XXXXXX")
	scratch_loop=""
	scratch_mnt=$scratch_dir/mnt
	truncate -s "$3M" "$scratch_dir/volume"
	scratch_loop=$(losetup --find --show "$scratch_dir/volume")
	mkfs.btrfs -q -f "$scratch_loop" >/dev/null 2>&1
	mkdir "$scratch_mnt"
	mount "$scratch_loop" "$scratch_mnt"
}

scratch_btrfs_remove() {
	[[ -n ${scratch_dir:-} ]] || return 0
	umount "$scratch_mnt" 2>/dev/null || true
	if [[ -n ${scratch_loop:-} ]]; then losetup -d "$scratch_loop" 2>/dev/null || true; fi
	rm -rf "$scratch_dir"
}
