# A configuration the previous release (f477c10) accepts: `hotdeskd -check`
# of f477c10 says "ok" (neither auth.lockout nor auth.max_lockout had an
# upper bound then).
auth {
  lockout     = "1000h"
  max_lockout = "2000h"
}
