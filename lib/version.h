/* The release version, printed by --version. */
#pragma once

#define DOTPROXY_VERSION "0.1.0"
