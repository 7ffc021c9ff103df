//! `simple-wallet`: deposits, withdrawals and transfers on named accounts (wire spec §6).
//!
//! Each input item is one operation, `deposit <acct> <amt>`, `withdraw <acct> <amt>` or
//! `transfer <from> <to> <amt>`, and gives one output `WALLET RESULT: <result>`. The ledger maps
//! accounts to balance strings, as Avalon's does; unlike Avalon's (kept under a key that changed at
//! every enclave start), it survives a restart: the enclave seals [`Workload::snapshot`].

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::stoi::stoi;
use crate::{Context, Input, Output, Workload, WorkloadError};

/// Avalon's wallet workload.
#[derive(Debug, Default)]
pub struct SimpleWallet {
    ledger: Mutex<BTreeMap<String, String>>,
}

const INSUFFICIENT_ARGUMENTS: &str = "Insufficient arguments supplied to perform wallet operation";

/// `std::stoi(x) > 0`, with any parse failure counted as invalid.
fn is_valid_amount(amount: &str) -> bool {
    stoi(amount).is_ok_and(|n| n > 0)
}

/// A stored balance or checked amount as an integer. Stored balances are always readable.
fn int(text: &str) -> i32 {
    stoi(text).unwrap_or(0)
}

impl SimpleWallet {
    fn execute(&self, request: &str) -> String {
        let args: Vec<&str> = request.split(' ').filter(|a| !a.is_empty()).collect();
        let mut ledger = self.ledger.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let result = match args.as_slice() {
            [] => INSUFFICIENT_ARGUMENTS.to_owned(),
            ["deposit", account, amount] if is_valid_amount(amount) => {
                deposit(&mut ledger, account, amount)
            }
            ["deposit", _, _] => "Deposit amount should be a positive value".to_owned(),
            ["withdraw", account, amount] if is_valid_amount(amount) => {
                withdraw(&mut ledger, account, amount)
            }
            ["withdraw", _, _] => "Withdraw amount should be a positive value".to_owned(),
            ["transfer", from, to, amount] if is_valid_amount(amount) => {
                transfer(&mut ledger, from, to, amount)
            }
            ["transfer", _, _, _] => "Transfer amount should be a positive value".to_owned(),
            ["deposit" | "withdraw" | "transfer", ..] => INSUFFICIENT_ARGUMENTS.to_owned(),
            _ => String::new(),
        };
        format!("WALLET RESULT: {result}")
    }
}

fn deposit(ledger: &mut BTreeMap<String, String>, account: &str, amount: &str) -> String {
    let balance = match ledger.get(account) {
        // A new account keeps the amount exactly as written ("0100" stays "0100").
        None => amount.to_owned(),
        Some(balance) => match int(balance).checked_add(int(amount)) {
            Some(sum) => sum.to_string(),
            None => return "Wallet balance would overflow".to_owned(),
        },
    };
    ledger.insert(account.to_owned(), balance.clone());
    format!("{account}::{balance}")
}

fn withdraw(ledger: &mut BTreeMap<String, String>, account: &str, amount: &str) -> String {
    let Some(balance) = ledger.get(account) else {
        return "No wallet details found".to_owned();
    };
    if int(balance) < int(amount) {
        return format!("No sufficient balance to withdraw. Available balance: {balance}");
    }
    let balance = (int(balance) - int(amount)).to_string();
    ledger.insert(account.to_owned(), balance.clone());
    format!("{account}::{balance}")
}

fn transfer(ledger: &mut BTreeMap<String, String>, from: &str, to: &str, amount: &str) -> String {
    let Some(debitor) = ledger.get(from).map(|b| int(b)) else {
        return "Debitor wallet not found".to_owned();
    };
    if debitor < int(amount) {
        return "No sufficient balance in debitor's account".to_owned();
    }
    let Some(creditor) = ledger.get(to).map(|b| int(b)) else {
        return "Creditor wallet not found".to_owned();
    };
    let debitor = debitor - int(amount);
    // A transfer to oneself reads the creditor balance before the debit, as Avalon does.
    let Some(creditor) = creditor.checked_add(int(amount)) else {
        return "Wallet balance would overflow".to_owned();
    };
    ledger.insert(from.to_owned(), debitor.to_string());
    ledger.insert(to.to_owned(), creditor.to_string());
    format!("{from}::{debitor},{to}::{creditor}")
}

impl Workload for SimpleWallet {
    fn name(&self) -> &'static str {
        "simple-wallet"
    }

    fn process(&self, _: &Context<'_>, inputs: &[Input]) -> Result<Vec<Output>, WorkloadError> {
        Ok(inputs
            .iter()
            .map(|input| Output::new(input.index, self.execute(&crate::text(&input.data))))
            .collect())
    }

    fn stateful(&self) -> bool {
        true
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        let ledger = self.ledger.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        serde_json::to_vec(&*ledger).ok()
    }

    fn restore(&self, snapshot: &[u8]) -> Result<(), WorkloadError> {
        let ledger: BTreeMap<String, String> = serde_json::from_slice(snapshot)
            .map_err(|e| WorkloadError::InvalidState(format!("wallet ledger: {e}")))?;
        if ledger.values().any(|balance| stoi(balance).is_err()) {
            return Err(WorkloadError::InvalidState("wallet ledger: unreadable balance".into()));
        }
        *self.ledger.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = ledger;
        Ok(())
    }
}
