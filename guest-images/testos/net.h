#pragma once
#include "virtio.h"
