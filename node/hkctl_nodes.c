/*
 * hkctl nodes: the cluster's members as one node sees them.
 *
 * Membership is each daemon's own view (heartbeats, node/cluster.h), so
 * one answer is enough.  Without --node or --socket the nodes of the
 * config are tried in order and the first that answers gives the view:
 * the report survives the loss of any one node, the first included.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "hkctl.h"

static int ask(const char *sock, Hk__Ctl__CtlResponse **rsp, char *err, size_t errlen)
{
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__NodesRequest nr = HK__CTL__NODES_REQUEST__INIT;

	req.req_case = HK__CTL__CTL_REQUEST__REQ_NODES;
	req.nodes = &nr;
	if (hkctl_call_at(sock, &req, rsp, HKCTL_NODE_TIMEOUT_S, err, errlen))
		return -1;
	if ((*rsp)->rep_case != HK__CTL__CTL_RESPONSE__REP_NODES) {
		snprintf(err, errlen, "hkd at %s sent an unexpected reply to nodes", sock);
		hk__ctl__ctl_response__free_unpacked(*rsp, NULL);
		*rsp = NULL;
		return -1;
	}
	return 0;
}

static json_t *node_json(const Hk__Ctl__NodeInfo *n)
{
	json_t *o = json_object();

	json_object_set_new(o, "name", json_string(n->name));
	json_object_set_new(o, "address", json_string(n->address));
	json_object_set_new(o, "self", json_boolean(n->self));
	json_object_set_new(o, "up", json_boolean(n->up));
	json_object_set_new(o, "last_heard_ms", json_integer(n->last_heard_ms));
	json_object_set_new(o, "rtt_us", json_integer((json_int_t)n->rtt_us));
	json_object_set_new(o, "msgs_sent", json_integer((json_int_t)n->msgs_sent));
	json_object_set_new(o, "msgs_recv", json_integer((json_int_t)n->msgs_recv));
	json_object_set_new(o, "bytes_sent", json_integer((json_int_t)n->bytes_sent));
	json_object_set_new(o, "bytes_recv", json_integer((json_int_t)n->bytes_recv));
	json_object_set_new(o, "dropped", json_integer((json_int_t)n->dropped));
	return o;
}

static void print_table(const Hk__Ctl__NodesReply *r, const char *view)
{
	printf("view of %s: cluster %s%s%s\n", view, r->cluster, *r->provider ? ", provider " : "",
	       r->provider);
	printf("%-12s %-22s %-6s %-11s %s\n", "NAME", "ADDRESS", "STATE", "LAST-HEARD", "RTT");
	for (size_t i = 0; i < r->n_nodes; i++) {
		const Hk__Ctl__NodeInfo *n = r->nodes[i];
		char heard[32], rtt[32];

		if (n->self)
			snprintf(heard, sizeof(heard), "(self)");
		else if (n->last_heard_ms < 0)
			snprintf(heard, sizeof(heard), "never");
		else
			snprintf(heard, sizeof(heard), "%.1f s ago", n->last_heard_ms / 1000.0);
		if (n->self || !n->rtt_us)
			snprintf(rtt, sizeof(rtt), "-");
		else if (n->rtt_us < 10000)
			snprintf(rtt, sizeof(rtt), "%" PRIu64 " us", n->rtt_us);
		else
			snprintf(rtt, sizeof(rtt), "%.1f ms", n->rtt_us / 1000.0);
		printf("%-12s %-22s %-6s %-11s %s\n", n->name, n->address, n->up ? "up" : "down",
		       heard, rtt);
	}
}

int hkctl_nodes(struct hkctl *c)
{
	static struct hkctl_node_status t[HK_MAX_NODES];
	unsigned n = hkctl_status_targets(c, t), down = 0, i;
	Hk__Ctl__CtlResponse *rsp = NULL;
	const Hk__Ctl__NodesReply *r;
	const char *view;
	int ret = 0;

	for (i = 0; i < n; i++)
		if (ask(t[i].sock, &rsp, t[i].err, sizeof(t[i].err)) == 0)
			break;
	if (!rsp) {
		if (n == 1)
			return hkctl_die("%s", t[0].err);
		for (i = 0; i < n; i++)
			fprintf(stderr, "hkctl: %s: %s\n", t[i].name, t[i].err);
		return hkctl_die("no node of %s answered", c->cfg->path);
	}
	r = rsp->nodes;
	view = *t[i].name ? t[i].name : t[i].sock;
	for (size_t k = 0; k < r->n_nodes; k++)
		if (r->nodes[k]->self)
			view = r->nodes[k]->name;
	for (size_t k = 0; k < r->n_nodes; k++)
		down += !r->nodes[k]->up;
	if (c->json) {
		json_t *a = json_array();

		for (size_t k = 0; k < r->n_nodes; k++)
			json_array_append_new(a, node_json(r->nodes[k]));
		hkctl_print_json(json_pack("{s:s, s:s, s:s, s:i, s:o}", "view", view, "cluster",
					   r->cluster, "provider", r->provider, "up",
					   (int)(r->n_nodes - down), "nodes", a));
	} else {
		print_table(r, view);
	}
	/* Nodes we could not reach before the one that answered are in its
	 * view too; say once why we asked another. */
	for (unsigned k = 0; k < i; k++)
		fprintf(stderr, "hkctl: %s: %s\n", t[k].name, t[k].err);
	if (down)
		ret = hkctl_die("%u of %zu nodes down (as %s sees it)", down, r->n_nodes, view);
	hk__ctl__ctl_response__free_unpacked(rsp, NULL);
	return ret;
}
