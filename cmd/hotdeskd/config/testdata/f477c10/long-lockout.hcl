# A configuration the previous release (f477c10) accepts: `hotdeskd -check`
# of f477c10 says "ok" (auth.max_lockout had no upper bound then).
auth {
  lockout     = "1h"
  max_lockout = "8760h"
}
