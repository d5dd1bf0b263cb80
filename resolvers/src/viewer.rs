//! Who is calling, and the one rule for what they may see.
//!
//! The server validates the bearer token and puts a [`Viewer`] in the request's data; a
//! request without a valid token has none. Resolvers ask [`viewer`] for it and
//! [`Viewer::authorize`] before handing out anything that belongs to a customer.

use async_graphql::{Context, ID};

use crate::error::{GraphError, GraphResult};
use crate::events::Key;
use crate::ids::CustomerId;

/// The group every agent is in at the process server.
pub(crate) const AGENTS_GROUP: &str = "agents";

/// The signed-in user of a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Viewer {
    /// The user's id at the identity provider (`sub`). Not necessarily who they are at the
    /// process server, which knows customers by their customer id.
    pub user_id: String,
    /// Display name, from the token.
    pub name: String,
    /// What they are.
    pub role: Role,
}

/// What a signed-in user is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    /// A customer: sees and changes only their own data.
    Customer(CustomerId),
    /// A call-centre / helpdesk agent: any customer's data, and the agents' tasks.
    Agent,
}

impl Viewer {
    /// Whether this viewer may see and act on `customer`'s data: `FORBIDDEN` otherwise.
    pub(crate) fn authorize(&self, customer: &CustomerId) -> GraphResult<()> {
        match &self.role {
            Role::Agent => Ok(()),
            Role::Customer(own) if own == customer => Ok(()),
            Role::Customer(_) => Err(GraphError::Forbidden(
                "this belongs to another customer".to_owned(),
            )),
        }
    }

    /// For what concerns a customer only when it names one (tasks, process instances): agents
    /// may see any; a customer only what names them, `FORBIDDEN` otherwise.
    pub(crate) fn authorize_about(&self, customer: Option<&CustomerId>) -> GraphResult<()> {
        match (&self.role, customer) {
            (Role::Agent, _) => Ok(()),
            (Role::Customer(_), Some(customer)) => self.authorize(customer),
            (Role::Customer(_), None) => Err(GraphError::Forbidden(
                "this does not concern you".to_owned(),
            )),
        }
    }

    /// Agents only: `FORBIDDEN` for customers.
    pub(crate) fn require_agent(&self) -> GraphResult<()> {
        match self.role {
            Role::Agent => Ok(()),
            Role::Customer(_) => Err(GraphError::Forbidden("only agents may do this".to_owned())),
        }
    }

    /// Who the viewer is at the process server, the one identity every task read and action
    /// uses: a customer by their customer id (the return process makes the customer it is for
    /// the owner of their pick-up task, whatever their `sub` at the identity provider), an
    /// agent by their user id.
    pub(crate) fn process_user(&self) -> &str {
        match &self.role {
            Role::Customer(id) => process_user_of(id),
            Role::Agent => &self.user_id,
        }
    }

    /// The event keys of what concerns this viewer whatever they read: their customer, and
    /// the audience of the tasks offered to them (themselves; the agents' group for agents).
    pub fn own_keys(&self) -> Vec<Key> {
        let mut keys: Vec<Key> = self
            .customer_id()
            .cloned()
            .map(Key::Customer)
            .into_iter()
            .collect();
        keys.extend(
            self.audience()
                .into_iter()
                .map(|who| Key::Audience(who.to_owned())),
        );
        keys
    }

    /// Who the tasks offered to this viewer name in their audience.
    pub(crate) fn audience(&self) -> Vec<&str> {
        match self.role {
            Role::Customer(_) => vec![self.process_user()],
            Role::Agent => vec![self.process_user(), AGENTS_GROUP],
        }
    }

    /// The customer a customer-role viewer is; `None` for agents.
    pub(crate) fn customer_id(&self) -> Option<&CustomerId> {
        match &self.role {
            Role::Customer(id) => Some(id),
            Role::Agent => None,
        }
    }

    /// Whose data an operation is about: a customer always acts for themselves; an agent must
    /// name the customer.
    pub(crate) fn acting_for(&self, named: Option<CustomerId>) -> GraphResult<CustomerId> {
        match (&self.role, named) {
            (Role::Customer(own), None) => Ok(own.clone()),
            (Role::Customer(own), Some(named)) => {
                self.authorize(&named)?;
                Ok(own.clone())
            }
            (Role::Agent, Some(named)) => Ok(named),
            (Role::Agent, None) => Err(GraphError::BadInput(
                "agents must say which customer this is for (customerId)".to_owned(),
            )),
        }
    }
}

/// Who a customer is at the process server: their customer id (see [`Viewer::process_user`]).
pub(crate) fn process_user_of(customer: &CustomerId) -> &str {
    customer.as_str()
}

/// The customer an operation is for: the signed-in customer, or the one an agent names
/// (`customerId` arguments).
pub(crate) fn acting_for(
    ctx: &Context<'_>,
    named: Option<&ID>,
) -> async_graphql::Result<CustomerId> {
    let named = named.map(|id| CustomerId::parse(id)).transpose()?;
    Ok(viewer(ctx)?.acting_for(named)?)
}

/// The signed-in viewer of this request, or `UNAUTHENTICATED`.
pub(crate) fn viewer<'a>(ctx: &Context<'a>) -> GraphResult<&'a Viewer> {
    ctx.data_opt::<Viewer>().ok_or(GraphError::Unauthenticated)
}
