# shellcheck shell=bash
# Debian helpers shared by tools/setup, tools/kvm-box and
# guest-images/linux/build-image: installing host packages, fetching a
# kernel package without installing it, and the modules a set of kernel
# modules needs. Source it; the caller defines die() (one line, then exit)
# and note() (one line to stderr), each with its own program's prefix.

# deb_ensure_packages PKG...: installs the missing ones with apt-get (no
# recommends); when that fails, updates the package lists and tries once
# more. Needs root only when something is missing.
deb_ensure_packages() {
	local installed missing=() p
	# One dpkg-query for all of them ("PACKAGE STATUS" lines).
	installed=$(dpkg-query -W -f='${Package} ${Status}\n' "$@" 2>/dev/null |
		sed -n 's/ install ok installed$//p') || true
	for p in "$@"; do
		[[ $'\n'$installed$'\n' == *$'\n'"${p%%:*}"$'\n'* ]] || missing+=("$p")
	done
	((${#missing[@]})) || return 0
	[[ $EUID == 0 ]] || die "missing packages ${missing[*]}: run as root to install them"
	note "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; then
		apt-get update -q >&2 || true
		apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
			die "apt-get install ${missing[*]} failed"
	fi
}

# deb_download DIR PKG [VERSION] [APT_OPTION...]: apt-get download of PKG
# (=VERSION when given, else any) into DIR; prints the .deb's path. Extra
# arguments go to apt-get (a private sources list, for instance).
deb_download() {
	local dir=$1 pkg=$2 ver=${3:-} deb
	shift 3 || shift $#
	# apt-get download drops privileges to _apt when _apt may write there.
	id _apt >/dev/null 2>&1 && chown _apt "$dir"
	{ [[ -n $ver ]] && (cd "$dir" && apt-get "$@" download -q "$pkg=$ver" >&2); } ||
		(cd "$dir" && apt-get "$@" download -q "$pkg" >&2) ||
		die "apt-get download $pkg failed"
	deb=$(find "$dir" -maxdepth 1 -name '*.deb' -print -quit)
	[[ -n $deb ]] || die "no .deb downloaded for $pkg"
	echo "$deb"
}

# deb_unpack_kernel DEB DEST: DEST/vmlinuz, DEST/config and
# DEST/lib/modules/KVER from a linux-image .deb, modules uncompressed
# (busybox insmod needs plain .ko files) and depmod run; prints
# "VERSION KVER". DEST must not exist.
deb_unpack_kernel() {
	local deb=$1 dest=$2 root ver kver
	root=$(mktemp -d "${dest%/*}/.unpack.XXXXXX")
	dpkg-deb -x "$deb" "$root" || die "dpkg-deb -x $deb failed"
	ver=$(dpkg-deb -f "$deb" Version)
	kver=$(find "$root/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' -quit 2>/dev/null)
	[[ -n $kver && -f $root/boot/vmlinuz-$kver ]] || die "no vmlinuz in $deb"
	if [[ -n $(find "$root/lib/modules" -name '*.ko.xz' -print -quit) ]]; then
		command -v xz >/dev/null || die "$deb has .ko.xz modules: install xz-utils"
		find "$root/lib/modules" -name '*.ko.xz' -exec xz -d {} +
	fi
	if [[ -n $(find "$root/lib/modules" -name '*.ko.zst' -print -quit) ]]; then
		command -v zstd >/dev/null || die "$deb has .ko.zst modules: install zstd"
		find "$root/lib/modules" -name '*.ko.zst' -exec zstd -q -d --rm {} +
	fi
	depmod -b "$root" "$kver" || die "depmod for $deb failed"
	mkdir -p "$dest/lib"
	mv "$root/boot/vmlinuz-$kver" "$dest/vmlinuz"
	mv "$root/boot/config-$kver" "$dest/config"
	mv "$root/lib/modules" "$dest/lib/modules"
	rm -rf "$root"
	echo "$ver $kver"
}

# deb_module_closure KROOT KVER MODULE: what loading MODULE from the kernel
# tree KROOT/lib/modules/KVER takes, dependencies first: one
# "relative/path.ko [params]" line per module, "builtin NAME" for one built
# into the kernel. The host's modprobe.d does not count (an empty config
# directory). Returns 1, printing modprobe's answer, for an unknown module.
deb_module_closure() {
	local kroot=$1 kver=$2 m=$3 noconf out rc=0 line path params
	noconf=$(mktemp -d)
	out=$(modprobe -C "$noconf" -d "$kroot" -S "$kver" --show-depends "$m" 2>&1) || rc=$?
	rmdir "$noconf"
	if ((rc)); then
		echo "$out"
		return 1
	fi
	while read -r line; do
		case $line in
		builtin\ *) echo "$line" ;;
		insmod\ *)
			line=${line#insmod }
			path=${line%% *} params=
			[[ $line == *\ * ]] && params=${line#* }
			echo "${path#"$kroot/lib/modules/$kver/"}${params:+ $params}"
			;;
		esac
	done <<<"$out"
}
