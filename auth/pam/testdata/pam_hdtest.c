/*
 * pam_hdtest: a tiny PAM module for the auth/pam tests (built by the tests
 * with the system C compiler). Options:
 *   prompt=TEXT   echo-off prompt text (a space is appended), default "PIN:"
 *   secret=VALUE  the expected answer
 *   info=TEXT     send TEXT as an informational message first
 *   crash         abort() inside pam_sm_authenticate
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <security/pam_modules.h>
#include <security/pam_ext.h>

/* wipe clears and frees an answer (NULL: none). */
static void wipe(char *resp)
{
	if (resp != NULL) {
		memset(resp, 0, strlen(resp));
		free(resp);
	}
}

/*
 * converse handles arg if it is one of a stage's conversation options,
 * "<stage>_info=TEXT" (send TEXT as an informational message) or
 * "<stage>_prompt" (ask question echo-off; PAM_SUCCESS only if answered),
 * its result in *rc; it returns 0 if arg is neither.
 */
static int converse(pam_handle_t *pamh, const char *arg, const char *stage, const char *question, int *rc)
{
	size_t n = strlen(stage);
	char *resp = NULL;

	if (strncmp(arg, stage, n) != 0)
		return 0;
	if (strncmp(arg + n, "_info=", 6) == 0) {
		*rc = pam_info(pamh, "%s", arg + n + 6);
		return 1;
	}
	if (strcmp(arg + n, "_prompt") != 0)
		return 0;
	*rc = pam_prompt(pamh, PAM_PROMPT_ECHO_OFF, &resp, "%s", question);
	wipe(resp);
	return 1;
}

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
	wipe(resp);
	return rc;
}

/*
 * Credential options:
 *   cred_log=PATH  append "establish" or "delete" to PATH for each call,
 *                  and succeed (as without it)
 */
int pam_sm_setcred(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	const char *path = NULL;
	FILE *f;
	int i;

	for (i = 0; i < argc; i++) {
		if (strncmp(argv[i], "cred_log=", 9) == 0)
			path = argv[i] + 9;
	}
	if (path == NULL)
		return PAM_SUCCESS;
	f = fopen(path, "a");
	if (f == NULL)
		return PAM_CRED_ERR;
	fprintf(f, "%s\n", (flags & PAM_DELETE_CRED) ? "delete" : "establish");
	fclose(f);
	return PAM_SUCCESS;
}

/*
 * Account options:
 *   acct_info=TEXT  send TEXT as an informational message
 *   acct_prompt     ask an echo-off question; PAM_SUCCESS only if answered
 *   acct=STATUS     return "expired", "perm_denied" or "new_authtok"
 *   acct_crash=USER abort() when PAM_USER is USER
 *   acct_taint=env  leave the process changed for whatever runs in it next:
 *                   HDTEST_PREV_USER=PAM_USER in its environment (setenv)
 *   acct_taint=umask  likewise: umask 077
 *   acct_clean      PAM_PERM_DENIED if the process carries either change
 */
int pam_sm_acct_mgmt(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	int i, rc;

	for (i = 0; i < argc; i++) {
		if (converse(pamh, argv[i], "acct", "Account PIN: ", &rc)) {
			if (rc != PAM_SUCCESS)
				return rc;
		} else if (strcmp(argv[i], "acct=expired") == 0) {
			return PAM_ACCT_EXPIRED;
		} else if (strcmp(argv[i], "acct=perm_denied") == 0) {
			return PAM_PERM_DENIED;
		} else if (strcmp(argv[i], "acct=new_authtok") == 0) {
			return PAM_NEW_AUTHTOK_REQD;
		} else if (strncmp(argv[i], "acct_crash=", 11) == 0) {
			const char *user = NULL;
			if (pam_get_item(pamh, PAM_USER, (const void **)&user) == PAM_SUCCESS &&
			    user != NULL && strcmp(user, argv[i] + 11) == 0)
				abort();
		} else if (strcmp(argv[i], "acct_taint=env") == 0) {
			const char *user = NULL;
			if (pam_get_item(pamh, PAM_USER, (const void **)&user) != PAM_SUCCESS || user == NULL)
				return PAM_SYSTEM_ERR;
			setenv("HDTEST_PREV_USER", user, 1);
		} else if (strcmp(argv[i], "acct_taint=umask") == 0) {
			umask(077);
		} else if (strcmp(argv[i], "acct_clean") == 0) {
			mode_t m = umask(022);
			umask(m);
			if (getenv("HDTEST_PREV_USER") != NULL || m == 077)
				return PAM_PERM_DENIED;
		}
	}
	return PAM_SUCCESS;
}

/*
 * Session options:
 *   sess_info=TEXT  send TEXT as an informational message
 *   sess_prompt     ask an echo-off question; PAM_SUCCESS only if answered
 */
int pam_sm_open_session(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	int i, rc;

	for (i = 0; i < argc; i++) {
		if (converse(pamh, argv[i], "sess", "Session PIN: ", &rc) && rc != PAM_SUCCESS)
			return rc;
	}
	return PAM_SUCCESS;
}

int pam_sm_close_session(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	return PAM_SUCCESS;
}

