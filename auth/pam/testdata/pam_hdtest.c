/*
 * pam_hdtest: a tiny PAM module for the auth/pam tests (built by the tests
 * with the system C compiler). Options:
 *   prompt=TEXT   echo-off prompt text (a space is appended), default "PIN:"
 *   secret=VALUE  the expected answer
 *   info=TEXT     send TEXT as an informational message first
 *   crash         abort() inside pam_sm_authenticate
 */
#include <stdlib.h>
#include <string.h>
#include <security/pam_modules.h>
#include <security/pam_ext.h>

int pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	const char *prompt = "PIN:", *secret = NULL, *info = NULL;
	char *resp = NULL;
	int i, rc;

	for (i = 0; i < argc; i++) {
		if (strncmp(argv[i], "prompt=", 7) == 0)
			prompt = argv[i] + 7;
		else if (strncmp(argv[i], "secret=", 7) == 0)
			secret = argv[i] + 7;
		else if (strncmp(argv[i], "info=", 5) == 0)
			info = argv[i] + 5;
		else if (strcmp(argv[i], "crash") == 0)
			abort();
	}
	if (info != NULL) {
		rc = pam_info(pamh, "%s", info);
		if (rc != PAM_SUCCESS)
			return rc;
	}
	rc = pam_prompt(pamh, PAM_PROMPT_ECHO_OFF, &resp, "%s ", prompt);
	if (rc != PAM_SUCCESS)
		return rc;
	rc = (resp != NULL && secret != NULL && strcmp(resp, secret) == 0) ? PAM_SUCCESS : PAM_AUTH_ERR;
	if (resp != NULL) {
		memset(resp, 0, strlen(resp));
		free(resp);
	}
	return rc;
}

int pam_sm_setcred(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	return PAM_SUCCESS;
}

/*
 * Account options:
 *   acct_info=TEXT  send TEXT as an informational message
 *   acct_prompt     ask an echo-off question; PAM_SUCCESS only if answered
 *   acct=STATUS     return "expired", "perm_denied" or "new_authtok"
 */
int pam_sm_acct_mgmt(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	char *resp = NULL;
	int i, rc;

	for (i = 0; i < argc; i++) {
		if (strncmp(argv[i], "acct_info=", 10) == 0) {
			rc = pam_info(pamh, "%s", argv[i] + 10);
			if (rc != PAM_SUCCESS)
				return rc;
		} else if (strcmp(argv[i], "acct_prompt") == 0) {
			rc = pam_prompt(pamh, PAM_PROMPT_ECHO_OFF, &resp, "Account PIN: ");
			if (resp != NULL) {
				memset(resp, 0, strlen(resp));
				free(resp);
			}
			if (rc != PAM_SUCCESS)
				return rc;
		} else if (strcmp(argv[i], "acct=expired") == 0) {
			return PAM_ACCT_EXPIRED;
		} else if (strcmp(argv[i], "acct=perm_denied") == 0) {
			return PAM_PERM_DENIED;
		} else if (strcmp(argv[i], "acct=new_authtok") == 0) {
			return PAM_NEW_AUTHTOK_REQD;
		}
	}
	return PAM_SUCCESS;
}
